"""The dashboard's GET /metrics (scrape token, relayed agent series, the agent's schedule series) and the host
panel, in front of the real agent process driving the docker/fm doubles."""

from __future__ import annotations

import os
import re
import shutil
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.config_factory import write_config
from support.ports import refused_port
from support.world import build_world, kill_hanging_doubles, start_agent
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app
from fmappliance.wire import format_timestamp

SCRAPE_TOKEN = "scrape-token-0123456789abcdef0123456789"


def parse(text: str) -> dict:
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[name][frozenset(labels.items())]


def scrape(client, token=SCRAPE_TOKEN):
    return client.get("/metrics", headers={"Authorization": f"Bearer {token}"} if token else {})


def configure(world, agent_url: str) -> None:
    """The world's config with a scrape token and one schedule; the dashboard asks the agent at agent_url."""
    token_file = world.root / "metrics.token"
    token_file.write_text(SCRAPE_TOKEN + "\n")
    os.chmod(token_file, 0o600)
    world.write_config(
        dashboard={"agent_url": agent_url, "metrics_token_file": str(token_file)},
        schedules=[
            {"stack": "prod", "site": "site1.example.com", "frequency": "daily", "time": "02:00", "timezone": "UTC"}
        ],
    )


@pytest.fixture
def world(tmp_path):
    w = build_world(tmp_path)
    with refused_port() as down:  # no agent until the agent fixture starts one
        configure(w, f"http://127.0.0.1:{down}")
        yield w
    kill_hanging_doubles(w.doubles)


@pytest.fixture
def agent(world):
    proc = start_agent(world)  # on port 0: it names the port it got
    configure(world, proc.url)
    yield proc
    proc.ensure_stopped()


@pytest.fixture
def dashboard(world, agent):
    app = make_app(world.config)
    yield WSGIClient(app)


# ------------------------------------------------------------------ token rules


def test_metrics_are_404_without_a_scrape_token_file(client):
    assert client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status == 404


def test_metrics_are_404_while_the_token_file_does_not_exist(tmp_path, fake_agent):
    config = load_config(
        write_config(
            tmp_path, dashboard={"agent_url": fake_agent.url, "metrics_token_file": str(tmp_path / "later.token")}
        )
    )
    assert scrape(WSGIClient(make_app(config))).status == 404
    assert fake_agent.requests == []


def test_the_scrape_token_is_required_and_no_session_is(dashboard, agent):
    for header in (
        None,
        "Bearer wrong-token-wrong-token-wrong-token",
        f"Bearer {SCRAPE_TOKEN} ",
        SCRAPE_TOKEN,
        f"Basic {SCRAPE_TOKEN}",
        "Bearer " + "é" * 40,
    ):
        response = dashboard.get("/metrics", headers={"Authorization": header} if header else {})
        assert response.status == 401, header
        assert "scrape token" in response.text and "Traceback" not in response.text
    # The agent's token is not the scrape token.
    assert scrape(dashboard, "test-token-0123456789abcdef0123456789abcdef").status == 401
    response = scrape(dashboard)
    assert response.status == 200
    assert response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert response.header("Set-Cookie") is None  # no session was made for Prometheus


def test_the_agent_unreachable_says_agent_down(world):
    # The world's agent is not started here; the schedule series are the agent's, so they are absent too.
    response = scrape(WSGIClient(make_app(world.config)))
    assert response.status == 200
    samples = parse(response.text)
    assert value(samples, "fmappliance_agent_up") == 0
    assert "fmappliance_stack_up" not in samples
    assert "fmappliance_schedule_lateness_seconds" not in samples


# ------------------------------------------------------------------ values


def test_relayed_series_match_the_agent_and_what_the_api_reports(dashboard, agent, world):
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    status, body = agent.request("POST", "/action", {"action": "backup_site", "stack": "erp", "site": "erp.localhost"})
    assert status == 202 and agent.wait_job(body["job"]["id"])["status"] == "succeeded"
    samples = parse(scrape(dashboard).text)
    assert value(samples, "fmappliance_agent_up") == 1
    _, stacks = agent.request("GET", "/stacks")
    up = {"running": 1, "partial": 0.5, "stopped": 0, "unknown": -1}
    for stack in stacks["stacks"]:
        assert value(samples, "fmappliance_stack_up", stack=stack["name"]) == up[stack["status"]]
    assert value(samples, "fmappliance_stack_up", stack="prod") == 0.5
    last = stacks["stacks"][0]["last_backups"]["erp.localhost"]
    created = datetime.fromisoformat(last["created"]).timestamp()
    site = {"stack": "erp", "site": "erp.localhost"}
    assert value(samples, "fmappliance_backup_last_success_timestamp_seconds", **site) == created
    assert value(samples, "fmappliance_backup_last_size_bytes", **site) == last["size"]
    _, listing = agent.request("GET", "/backups/erp/erp.localhost")
    assert value(samples, "fmappliance_backups_kept", **site) == len(listing["backups"]) == 1
    assert value(samples, "fmappliance_jobs_total", action="backup_site", status="succeeded") == 1


def test_schedule_series_are_the_agents_relayed_once(world, agent):
    """The agent runs the schedules and exports their lateness and missed counts; the dashboard
    relays them (and adds no second copy of its own)."""
    now = datetime.now(timezone.utc)
    old = (now - timedelta(hours=5)).replace(second=0, microsecond=0)
    schedule = {
        "id": "s1",
        "kind": "backup",
        "stack": "prod",
        "site": "site1.example.com",
        "frequency": "daily",
        "time": f"{old:%H:%M}",
        "timezone": "UTC",
        "enabled": True,
        "handled_through": format_timestamp(old - timedelta(days=1)),
    }
    status, _ = agent.request("PUT", "/schedules", {"version": 1, "catchup_hours": 1, "schedules": [schedule]})
    assert status == 200
    labels = {"schedule": "s1", "stack": "prod", "site": "site1.example.com"}
    app = make_app(world.config)
    text = scrape(WSGIClient(app)).text
    samples = parse(text)
    # The due time 5 h ago was more than catchup_hours late: recorded missed, noticed 5 h late.
    assert value(samples, "fmappliance_schedule_missed_total", **labels) == 1
    assert 5 * 3600 <= value(samples, "fmappliance_schedule_lateness_seconds", **labels) <= 5 * 3600 + 60
    assert text.count("# TYPE fmappliance_schedule_missed_total") == 1


# ------------------------------------------------------------------ host panel


def read_proc():
    with open("/proc/loadavg") as fh:
        load = " ".join(f"{float(x):.2f}" for x in fh.read().split()[:3])
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return load, info["MemTotal"] - info["MemAvailable"]


def test_dashboard_page_loads_the_host_panel(dashboard):
    assert dashboard.login().status == 303
    page = dashboard.get("/dashboard").text
    assert 'hx-get="/dashboard/host"' in page and 'id="host-panel"' in page


def test_host_panel_figures_match_proc_and_docker_stats_of_the_doubles(dashboard, agent, world):
    world.doubles.set_container_stats("frappe_docker-backend-1", 12.5, 3 * 1024**3 // 2)
    assert dashboard.login().status == 303
    before = read_proc()
    html = dashboard.get("/dashboard/host", headers={"HX-Request": "true"}).text
    after = read_proc()
    load = re.search(r'class="host-load" data-load="([^"]+)"', html).group(1)
    assert load in (before[0], after[0])
    used = int(re.search(r'class="host-memory" data-bytes="(\d+)"', html).group(1))
    low, high = sorted((before[1], after[1]))
    assert low - (64 << 20) <= used <= high + (64 << 20)
    _, stacks = agent.request("GET", "/stacks")
    for stack in stacks["stacks"]:
        running = [s["name"] for s in stack["services"] if s["state"] == "running"]
        figures = [world.doubles.container_stats(n) for n in running]
        row = re.search(rf'<tr data-stack="{stack["name"]}">(.*?)</tr>', html).group(1)
        cpu = float(re.search(r'data-cpu="([^"]+)"', row).group(1))
        memory = int(re.search(r'class="host-stack-memory" data-bytes="(\d+)"', row).group(1))
        assert cpu == pytest.approx(sum(f["cpu_percent"] for f in figures), abs=0.005)
        assert memory == sum(f["memory_bytes"] for f in figures)
    docker_free = int(re.search(r'data-disk="docker" data-bytes="(\d+)"', html).group(1))
    assert abs(docker_free - shutil.disk_usage(world.doubles.docker_root()).free) < 256 << 20
    backups_free = int(re.search(r'data-disk="backups" data-bytes="(\d+)"', html).group(1))
    _, host = agent.request("GET", "/host")
    assert abs(backups_free - next(d for d in host["disks"] if d["name"] == "backups")["free_bytes"]) < 256 << 20
    # "CPU %" of what: docker stats' percent of one core, summed over the stack's containers.
    assert '<th>CPU <span class="muted">(% of one core)</span></th>' in html
    assert f"100 % is one core fully busy, so at most {host['cpu_count'] * 100} %" in html
    assert 'data-label="CPU (% of one core)"' in html


def test_host_panel_says_why_when_the_agent_is_down(world):
    client = WSGIClient(make_app(world.config))
    assert client.login().status == 303
    response = client.get("/dashboard/host", headers={"HX-Request": "true"})
    assert response.status == 200
    assert "Agent unreachable" in response.text and 'role="alert"' in response.text
    assert client.get("/dashboard/host", headers={"Accept": "application/json"}).status == 502
