"""GET /metrics on the agent: parsed with prometheus-client's own parser and checked against the API."""

from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.wsgi import wait_job

from fmappliance.actions_table import ACTIONS
from fmappliance.agent.metrics import JOB_DURATION_BUCKETS


def scrape(client) -> dict:
    """{sample name: {frozenset(labels): value}} of one scrape, after checking the response."""
    res = client.get("/metrics")
    assert res.status == 200, res
    assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict = {}
    for family in text_string_to_metric_families(res.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name, **labels):
    return samples[name][frozenset(labels.items())]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def run(client, action, stack, site=None) -> dict:
    return wait_job(client, client.post_action(action, stack, site).json()["job"]["id"])


def test_metrics_need_the_token(client):
    assert client.get("/metrics", token=False).status == 401
    assert client.get("/metrics", token="Bearer wrong-token-wrong-token-wrong-token").status == 401


def test_stack_up_follows_the_status_the_api_reports(client, world):
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    world.doubles.set_all(world.fm_project, "exited")
    statuses = {s["name"]: s["status"] for s in client.get("/stacks").json()["stacks"]}
    assert statuses == {"prod": "partial", "erp": "stopped"}
    samples = scrape(client)
    assert value(samples, "fmappliance_stack_up", stack="prod") == 0.5
    assert value(samples, "fmappliance_stack_up", stack="erp") == 0


def test_stack_up_is_minus_one_when_docker_cannot_tell(client, world):
    world.doubles.set_faults(daemon_down=True)
    samples = scrape(client)
    assert value(samples, "fmappliance_stack_up", stack="prod") == -1
    assert value(samples, "fmappliance_stack_up", stack="erp") == -1
    world.doubles.set_faults()
    for name in ("prod", "erp"):
        client.services.status.invalidate(name)
    assert value(scrape(client), "fmappliance_stack_up", stack="prod") == 1


def test_backup_series_match_the_listing_and_the_job(client, world):
    job = run(client, "backup_site", "prod", "site1.example.com")
    assert job["status"] == "succeeded", job
    listing = client.get("/backups/prod/site1.example.com").json()["backups"]
    samples = scrape(client)
    site = {"stack": "prod", "site": "site1.example.com"}
    assert value(samples, "fmappliance_backup_last_success_timestamp_seconds", **site) == epoch(listing[0]["created"])
    assert value(samples, "fmappliance_backup_last_size_bytes", **site) == listing[0]["size"]
    assert value(samples, "fmappliance_backups_kept", **site) == len(listing) == 1
    assert value(samples, "fmappliance_backup_duration_seconds", **site) == epoch(job["finished"]) - epoch(
        job["started"]
    )
    # A site without backups: kept 0 and a last success of 0, so "no backup for 26 h" fires for it too.
    other = {"stack": "prod", "site": "site2.example.com"}
    assert value(samples, "fmappliance_backups_kept", **other) == 0
    assert value(samples, "fmappliance_backup_last_success_timestamp_seconds", **other) == 0
    assert frozenset(other.items()) not in samples["fmappliance_backup_last_size_bytes"]
    assert frozenset(other.items()) not in samples["fmappliance_backup_duration_seconds"]


def test_backup_facts_follow_changes_on_disk(client, world):
    first = run(client, "backup_site", "erp", "erp.localhost")["result"]["backup"]
    site = {"stack": "erp", "site": "erp.localhost"}
    assert value(scrape(client), "fmappliance_backups_kept", **site) == 1
    # An operator removes the backup by hand (no job ends): the next scrape sees it gone.
    site_dir = Path(world.config["backups"]["base_path"]) / "erp" / "erp.localhost"
    for entry in first["files"]:
        (site_dir / entry["name"]).unlink()
    (site_dir / (first["id"] + ".json")).unlink()
    assert client.get("/backups/erp/erp.localhost").json() == {"backups": []}
    samples = scrape(client)
    assert value(samples, "fmappliance_backups_kept", **site) == 0
    assert value(samples, "fmappliance_backup_last_success_timestamp_seconds", **site) == 0


def test_a_stopped_stack_keeps_its_backup_series(client, world):
    assert run(client, "backup_site", "prod", "site2.example.com")["status"] == "succeeded"
    # The sites of a stack whose backend is gone cannot be listed; its backups are still on disk.
    world.doubles.set_all(world.compose_project, "exited")
    client.services.status.invalidate("prod")
    client.services.inventory.invalidate("prod")
    samples = scrape(client)
    assert value(samples, "fmappliance_stack_up", stack="prod") == 0
    assert value(samples, "fmappliance_backups_kept", stack="prod", site="site2.example.com") == 1


def test_job_counters_and_histograms_match_the_jobs_the_api_lists(client, world):
    assert run(client, "restart_stack", "erp")["status"] == "succeeded"
    assert run(client, "backup_site", "prod", "site1.example.com")["status"] == "succeeded"
    world.doubles.set_faults(fail={"bench migrate": 1})
    assert run(client, "migrate_site", "prod", "site1.example.com")["status"] == "failed"
    jobs = client.get("/jobs?limit=500").json()["jobs"]
    listed = Counter((j["action"], j["status"]) for j in jobs)
    samples = scrape(client)
    for action in ACTIONS:
        for outcome in ("succeeded", "failed"):
            assert value(samples, "fmappliance_jobs_total", action=action, status=outcome) == listed[(action, outcome)]
        ended = [j for j in jobs if j["action"] == action]
        durations = [epoch(j["finished"]) - epoch(j["started"]) for j in ended]
        assert value(samples, "fmappliance_job_duration_seconds_count", action=action) == len(ended)
        assert value(samples, "fmappliance_job_duration_seconds_sum", action=action) == sum(durations)
        for bound in JOB_DURATION_BUCKETS:
            le = str(float(bound))
            assert value(samples, "fmappliance_job_duration_seconds_bucket", action=action, le=le) == sum(
                1 for d in durations if d <= bound
            )
    assert listed[("migrate_site", "failed")] == 1


def test_counters_survive_a_restart_from_the_job_store(make_client, world):
    first = make_client()
    assert run(first, "restart_stack", "erp")["status"] == "succeeded"
    before = scrape(first)["fmappliance_jobs_total"]
    first.services.close()
    second = make_client()
    assert scrape(second)["fmappliance_jobs_total"] == before
    assert value(scrape(second), "fmappliance_jobs_total", action="restart_stack", status="succeeded") == 1


def test_backup_disk_free_is_the_backup_file_system(client, world):
    base = world.config["backups"]["base_path"]
    samples = scrape(client)
    free = value(samples, "fmappliance_backup_disk_free_bytes", path=base)
    api_free = client.get("/stacks").json()["disk"]["free_bytes"]
    # Other tests write to the same file system meanwhile: the figures agree within 256 MiB.
    assert abs(free - api_free) < 256 << 20
    assert abs(free - shutil.disk_usage(Path(base).parent).free) < 256 << 20


def test_a_warm_scrape_asks_docker_nothing(client, world):
    scrape(client)
    world.doubles.clear_invocations()
    for _ in range(3):
        scrape(client)
    assert world.doubles.argvs("docker") == []


@pytest.mark.parametrize("weird", ['a"b', "back\\slash", "new\nline"])
def test_label_values_are_escaped_so_the_parser_reads_them_back(weird):
    from fmappliance.prometheus_text import Family, render

    family = Family("x_up", "gauge", "Help with a \\ backslash\nand a newline.")
    family.add(0.5, stack=weird)
    parsed = list(text_string_to_metric_families(render([family])))
    assert parsed[0].documentation == "Help with a \\ backslash\nand a newline."
    assert parsed[0].samples[0].labels == {"stack": weird} and parsed[0].samples[0].value == 0.5


def test_the_real_agent_serves_metrics_after_a_backup_over_its_socket(world, agent_process):
    import urllib.request

    from support.config_factory import TEST_TOKEN

    agent = agent_process()
    status, body = agent.request("POST", "/action", {"action": "backup_site", "stack": "erp", "site": "erp.localhost"})
    assert status == 202 and agent.wait_job(body["job"]["id"])["status"] == "succeeded"
    req = urllib.request.Request(agent.url + "/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        assert res.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = res.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    kept = {(s.labels["stack"], s.labels["site"]): s.value for s in families["fmappliance_backups_kept"].samples}
    assert kept[("erp", "erp.localhost")] == 1
    totals = {(s.labels["action"], s.labels["status"]): s.value for s in families["fmappliance_jobs"].samples}
    assert totals[("backup_site", "succeeded")] == 1
    _, host = agent.request("GET", "/host")
    assert {s["name"] for s in host["stacks"]} == {"erp", "prod"} and host["stats_reason"] is None
