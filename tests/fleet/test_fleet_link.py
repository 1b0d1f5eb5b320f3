"""The fleet end to end on one machine: real commands, real agent and uplink processes, real TLS.

A hub (the dashboard's fleet hub over the dashboard's state database, here in the test process
so requests can be sent through it) and server worlds side by side, each with its own doubles,
agent socket, state dir and uplink.  Both servers have a stack named ``prod``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import pytest
import yaml
from support.fleet_world import SCRAPE_TOKEN, FleetHub, ServerWorld, listening_tcp_inodes, socket_inodes, wait_online
from support.polling import wait_for

from fmappliance.dashboard.agent_client import AgentError

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(tmp_path):
    fleet_hub = FleetHub(tmp_path / "hub")
    fleet_hub.pin = fleet_hub.init()
    yield fleet_hub
    fleet_hub.stop()


@pytest.fixture
def servers(tmp_path):
    made = []

    def make(name: str, **security) -> ServerWorld:
        world = ServerWorld(tmp_path / name, name, **security)
        made.append(world)
        return world

    yield make
    for world in made:
        world.stop()


def test_two_servers_join_and_answer_through_their_links_and_listen_on_no_port(hub, servers):
    assert re.fullmatch(r"[0-9a-f]{64}", hub.pin)
    hub.start()
    worlds = [servers("erp-b"), servers("erp-c", fleet_allowed_actions=["backup_site"])]
    for world in worlds:
        token = hub.token(world.name)
        assert token.startswith("FMJ1" + hub.pin + "::")
        joined = world.join(hub.address, token, "--name", world.name)
        assert joined.returncode == 0, joined.stderr + joined.stdout
        assert token not in joined.stdout + joined.stderr
        world.start_agent()
        world.start_uplink()
    for world in worlds:
        wait_online(hub.hub, world.name)

    # What was stored: the agent keeps only the sha256 of its API token; the hub the hash of the secret.
    for world in worlds:
        api_token = hub.registry.api_token(world.name)
        stored = (world.state_dir / "fleet.json").read_text()
        assert api_token not in stored
        assert json.loads(stored)["server"] == world.name
        assert oct((world.fleet_dir / "agent.key").stat().st_mode & 0o777) == "0o600"
        assert sorted(os.listdir(world.fleet_dir)) == ["agent.crt", "agent.key", "hub.sha256", "uplink.json"]

    # GET /stacks reaches each server's own agent: the same stack name, each world's own path.
    seen = {}
    for world in worlds:
        stacks = hub.client(world.name).stacks()["stacks"]
        prod = next(s for s in stacks if s["name"] == "prod")
        seen[world.name] = prod
    for world in worlds:
        detail = hub.client(world.name).stack("prod")
        assert detail["stack"]["name"] == "prod"
    # Many requests in a row: the uplink tops its pool up after each.
    for _ in range(8):
        assert hub.client("erp-b").stacks()["stacks"]

    # An action through the link runs on that server, is in its fleet audit, and fleet_allowed_actions holds.
    answer = hub.client("erp-b").action("backup_site", "prod", "site1.example.com")
    assert answer["success"] is True
    job = wait_for(
        lambda: (j := hub.client("erp-b").job(answer["job"]["id"]))["status"] in ("succeeded", "failed") and j,
        60,
        "the backup through the link to end",
        interval=0.3,
    )
    assert job["status"] == "succeeded", job
    assert worlds[0].world.published("prod", "site1.example.com")
    assert not worlds[1].world.published("prod", "site1.example.com")
    audit = [json.loads(line) for line in (worlds[0].state_dir / "fleet-audit.jsonl").read_text().splitlines()]
    assert audit[-1]["action"] == "backup_site" and audit[-1]["result"] == 202 and audit[-1]["server"] == "erp-b"
    assert re.fullmatch(r"[0-9a-f]{16}", audit[-1]["request_id"])
    assert not (worlds[1].state_dir / "fleet-audit.jsonl").exists()
    # A download through the link (whole and a Range) equals the file on that server's disk.
    backup = hub.client("erp-b").backups("prod", "site1.example.com")[0]
    name = next(f["name"] for f in backup["files"] if f["name"].endswith(".sql.gz"))
    on_disk = (worlds[0].world.root / "backups" / "prod" / "site1.example.com" / name).read_bytes()
    download = hub.client("erp-b").stream_download("prod", "site1.example.com", name)
    assert download.status == 200
    assert hashlib.sha256(b"".join(download.chunks())).hexdigest() == hashlib.sha256(on_disk).hexdigest()
    part = hub.client("erp-b").stream_download("prod", "site1.example.com", name, range_header="bytes=2-9")
    assert part.status == 206 and b"".join(part.chunks()) == on_disk[2:10]
    # A live log through the link, and it ends when the dashboard side closes it.
    worlds[1].world.doubles.write_log(worlds[1].world.compose_project, "backend", "hello from erp-c")
    stream = hub.client("erp-c").open_log_stream("prod", "backend", tail=10, follow=True)
    lines = wait_for(lambda: [line for line in stream.next_lines(1) or [] if "hello from erp-c" in line], 10, "log")
    assert lines
    worlds[1].world.doubles.write_log(worlds[1].world.compose_project, "backend", "and more")
    assert wait_for(lambda: [line for line in stream.next_lines(1) or [] if "and more" in line], 10, "followed log")
    stream.close()

    with pytest.raises(AgentError) as refused:
        hub.client("erp-c").action("restart_stack", "prod")
    assert refused.value.status == 403
    assert refused.value.message == (
        "erp-c does not accept restart_stack from the fleet (security.fleet_allowed_actions on erp-c)"
    )
    fleet_audit = hub.client("erp-c").request("GET", "/fleet/audit")[1]["entries"]
    assert [(e["action"], e["result"]) for e in fleet_audit] == [("restart_stack", 403)]

    # No listening TCP port on a joined server: none of the agent's or the uplink's sockets listens.
    listening = listening_tcp_inodes()
    assert socket_inodes(os.getpid()) & listening, "control: the hub in this process does listen"
    for world in worlds:
        for pid in (world.agent.proc.pid, world.uplink.pid):
            assert not socket_inodes(pid) & listening, f"{world.name}: pid {pid} listens on TCP"

    # The dashboard's own view: the CLI's registry and GET /fleet with the link states and figures.
    listed = hub.cli("list", "--json")
    assert [s["name"] for s in json.loads(listed.stdout)["servers"]] == ["erp-b", "erp-c"]
    inventory = yaml.safe_load(hub.cli("inventory", "--format", "ansible").stdout)
    assert inventory == {
        "all": {
            "children": {
                "fmappliance": {
                    "hosts": {"erp-b": {"ansible_host": "127.0.0.1"}, "erp-c": {"ansible_host": "127.0.0.1"}}
                }
            }
        }
    }
    client = _signed_in_dashboard(hub)
    answer = client.get("/fleet", headers={"Accept": "application/json"})
    assert answer.status == 200, answer.text
    rows = {row["name"]: row for row in answer.json()["servers"]}
    assert sorted(rows) == ["erp-b", "erp-c"]
    for row in rows.values():
        assert row["state"] == "online"
        assert row["stacks_total"] == 2 and row["agent_version"] and row["last_seen"]
        assert abs(row["clock_skew_seconds"]) < 5
    assert rows["erp-b"]["worst_backup_age_seconds"] is None  # site2 of erp-b has never been backed up
    # Prometheus: the per-server series on /metrics, each agent's exposition relayed, http_sd targets.
    scrape = {"Authorization": f"Bearer {SCRAPE_TOKEN}"}
    metrics = client.get("/metrics", headers=scrape).text
    assert 'fmappliance_server_up{server="erp-b"} 1' in metrics
    assert 'fmappliance_server_up{server="erp-c"} 1' in metrics
    assert re.search(r'fmappliance_server_clock_skew_seconds\{server="erp-c"\} -?\d', metrics)
    relayed = client.get("/metrics/server/erp-c", headers=scrape)
    assert relayed.status == 200 and "fmappliance_stack_up" in relayed.text, relayed.text[:300]
    assert client.get("/metrics/server/erp-c").status == 401
    assert client.get("/metrics/server/nope", headers=scrape).status == 404
    sd = client.get("/fleet/prometheus-sd", headers=scrape).json()
    assert [g["labels"] for g in sd] == [
        {"server": "erp-b", "__metrics_path__": "/metrics/server/erp-b"},
        {"server": "erp-c", "__metrics_path__": "/metrics/server/erp-c"},
    ]
    page = _render_from_this_checkout("fleet", servers=list(rows.values()))
    assert "erp-c" in page and 'hx-trigger="every 10s"' in page and "2 / 2" in page


def _render_from_this_checkout(name: str, **values) -> str:
    """The page's templates as in this checkout (the shared venv maps fmappliance.assets to /work/main)."""
    from pathlib import Path

    import bottle

    root = Path(__file__).resolve().parents[2] / "assets" / "templates"

    def partial(template: str, **more) -> str:
        return bottle.SimpleTemplate(source=(root / f"{template}.tpl").read_text()).render(partial=partial, **more)

    return partial(name, **values)


def _signed_in_dashboard(hub, local_agent=None):
    from support.wsgi import WSGIClient

    from fmappliance.dashboard.app import make_app
    from fmappliance.dashboard.fleet_client import FleetView

    app = make_app(hub.config)
    app.ctx.services.fleet_view = FleetView(hub.hub, hub.registry, hub.config, local_agent=local_agent)
    client = WSGIClient(app)
    assert client.login().status == 303
    return client


def test_refused_joins_say_why_and_store_nothing(hub, servers):
    hub.start()
    world = servers("erp-b")

    def refused(token, *extra, code=6):
        done = world.join(hub.address, token, *extra)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        assert not (world.state_dir / "fleet.json").exists()
        assert not (world.fleet_dir / "uplink.json").exists()
        return done.stderr

    good = hub.token("erp-b")
    wrong_secret = good[:-32] + ("a" * 32 if not good.endswith("a" * 32) else "b" * 32)
    assert "not known to this dashboard" in refused(wrong_secret, "--name", "erp-b")
    unknown_id = good[: 4 + 64 + 2] + "zzzzzzzz" + good[4 + 64 + 2 + 8 :]
    assert "not known to this dashboard" in refused(unknown_id, "--name", "erp-b")
    assert "is for server erp-b, not erp-x" in refused(good, "--name", "erp-x")
    assert "not a join token" in refused("FMJ1nonsense", "--name", "erp-b", code=2)
    foreign = "FMJ1" + "0" * 64 + good[4 + 64 :]  # a token of another dashboard
    assert "does not match the join token" in refused(foreign, "--name", "erp-b", code=4)
    assert "not a valid server name" in refused(good, "--name", "Erp_B", code=2)
    expired = hub.token("erp-b", ttl=1)
    wait_for(lambda: "expired" in hub.cli("token", "list").stdout, 5, "the token to expire", interval=0.2)
    assert "expired at" in refused(expired, "--name", "erp-b")

    # The good token works once; used again (elsewhere) it is refused with when and by whom.
    joined = world.join(hub.address, good, "--name", "erp-b")
    assert joined.returncode == 0, joined.stderr
    again = world.join(hub.address, good, "--name", "erp-b")
    assert again.returncode == 5 and "already joined" in again.stderr
    other = servers("erp-d")
    done = other.join(hub.address, good, "--name", "erp-b")
    assert done.returncode == 6 and "already used at" in done.stderr and "by server erp-b" in done.stderr
    # A token for a name already in the fleet is refused with 409.
    dup = other.join(hub.address, hub.token(), "--name", "erp-b")
    assert dup.returncode == 6 and "already in the fleet" in dup.stderr

    import socket
    import threading

    plain = socket.create_server(("127.0.0.1", 0))

    def answer_in_plain_http():
        conn, _ = plain.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer_in_plain_http, daemon=True).start()
    not_tls = other.join(f"127.0.0.1:{plain.getsockname()[1]}", hub.token(), "--name", "erp-d")
    plain.close()
    assert not_tls.returncode == 3 and "did not complete a TLS 1.3 handshake" in not_tls.stderr
    unreachable = other.join(f"127.0.0.1:{hub.port + 1 if hub.port < 65535 else 1}", hub.token(), "--name", "erp-d")
    assert unreachable.returncode == 3 and "Cannot reach" in unreachable.stderr

    # Revoked tokens are refused too.
    revoked = hub.token("erp-d")
    token_id = revoked.split("::")[1].split(".")[0]
    assert hub.cli("token", "revoke", token_id).returncode == 0
    done = other.join(hub.address, revoked, "--name", "erp-d")
    assert done.returncode == 6 and "revoked" in done.stderr


def test_the_token_is_never_read_from_argv_and_stdin_works(hub, servers):
    hub.start()
    world = servers("erp-b")
    token = hub.token("erp-b")
    # no env, no file: read from stdin
    from support.fleet_world import run

    done = run(
        "fmappliance.agent",
        ["--config", str(world.config_path), "fleet", "join", hub.address, "--name", "erp-b", "--wait", "0"],
        stdin=token + "\n",
    )
    assert done.returncode == 0, done.stderr
    status = world.fleet("status", "--json")
    assert json.loads(status.stdout)["server"] == "erp-b"
    left = world.fleet("leave")
    assert left.returncode == 0 and not (world.state_dir / "fleet.json").exists()
    assert world.fleet("leave").returncode == 5


def test_a_removed_server_is_refused_and_an_agent_down_is_told_apart(hub, servers):
    hub.start()
    world = servers("erp-b")
    assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
    world.start_agent()
    world.start_uplink()
    wait_online(hub.hub, "erp-b")

    world.agent.ensure_stopped()
    with pytest.raises(AgentError) as down:
        hub.client("erp-b").stacks()
    assert down.value.status == 502
    assert down.value.message == "erp-b's uplink is connected but its agent does not answer."
    assert hub.hub.state("erp-b")["state"] == "agent_down"
    world.start_agent()
    assert hub.client("erp-b").stacks()["stacks"]
    assert hub.hub.state("erp-b")["state"] == "online"

    removed = hub.cli("remove", "erp-b", "--yes")
    assert removed.returncode == 0, removed.stderr
    wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] == 0, 10, "the pooled links to close")
    with pytest.raises(AgentError) as gone:
        hub.client("erp-b")
    assert gone.value.status == 404
    # The uplink keeps trying and is closed each time without a byte: it logs so, and nothing parks.
    wait_for(lambda: "the hub closed the connection" in world.uplink_output(), 15, "the uplink to be refused")
    assert hub.hub.state("erp-b")["idle_connections"] == 0


def test_without_a_hub_the_fleet_page_is_404(hub):
    from support.wsgi import WSGIClient

    from fmappliance.dashboard.app import make_app

    client = WSGIClient(make_app(hub.config))
    assert client.login().status == 303
    answer = client.get("/fleet", headers={"Accept": "application/json"})
    assert answer.status == 404
    assert answer.json()["message"] == "This dashboard runs no fleet hub (fleet.listen is not set)."


def test_link_states_through_a_killed_uplink_and_a_hub_restart(tmp_path, servers):
    hub = FleetHub(tmp_path / "hub", unreachable_after=2)
    hub.init()
    hub.start()
    world = servers("erp-b")
    try:
        assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        world.start_agent()
        world.start_uplink()
        wait_online(hub.hub, "erp-b")
        # The pool is topped up after use and settles back to `idle` (2) connections.
        for _ in range(6):
            hub.client("erp-b").stacks()
        wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] == 2, 10, "the pool to settle at 2")

        world.uplink.kill()
        world.uplink.wait()
        wait_for(lambda: hub.hub.state("erp-b")["state"] == "connecting", 5, "connecting after the drop")
        wait_for(lambda: hub.hub.state("erp-b")["state"] == "unreachable", 10, "unreachable")
        with pytest.raises(AgentError) as refused:
            hub.client("erp-b").stacks()
        assert refused.value.status == 503
        assert re.fullmatch(
            r"server erp-b is unreachable since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(0 min ago\)\.", refused.value.message
        )

        world.start_uplink()
        wait_online(hub.hub, "erp-b")
        # The dashboard restarts: a new hub on the same port; the uplink is back within seconds.
        hub.hub.stop()
        started = time.monotonic()
        hub.start()
        assert hub.hub.state("erp-b")["state"] == "connecting"
        wait_online(hub.hub, "erp-b", timeout=15)
        assert time.monotonic() - started < 10
        assert hub.client("erp-b").stacks()["stacks"]
    finally:
        hub.stop()


def test_a_rotated_token_reaches_the_server_and_a_removed_one_is_told_to_forget(hub, servers):
    hub.start()
    world = servers("erp-b")
    assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
    world.start_agent()
    world.start_uplink()
    wait_online(hub.hub, "erp-b")
    old = hub.registry.api_token("erp-b")

    rotated = hub.cli("rotate-token", "erp-b")
    assert rotated.returncode == 0 and "is rotated" in rotated.stdout, rotated.stdout + rotated.stderr
    new = hub.registry.api_token("erp-b")
    assert new != old
    record = json.loads((world.state_dir / "fleet.json").read_text())
    assert [t["expires"] is None for t in record["tokens"]] == [False, True]
    assert 250 < record["tokens"][0]["expires"] - time.time() <= 300
    assert old not in json.dumps(record) and new not in json.dumps(record)
    assert hub.client("erp-b").stacks()["stacks"]  # with the new token
    client = hub.client("erp-b")
    client._auth = f"Bearer {old}"
    assert client.stacks()["stacks"], "the old token works during its 5 minutes"

    removed = hub.cli("remove", "erp-b", "--yes")
    assert removed.returncode == 0
    wait_for(
        lambda: json.loads((world.state_dir / "fleet.json").read_text())["tokens"] == [],
        10,
        "the removed server to forget its fleet tokens",
    )
    audit = [json.loads(line) for line in (world.state_dir / "fleet-audit.jsonl").read_text().splitlines()]
    assert [e["path"] for e in audit] == ["/fleet/tokens", "/fleet/leave"]


def test_five_servers_join_and_are_online_on_the_fleet_page(hub, servers):
    hub.start()
    names = [f"erp-{i}" for i in range(1, 6)]
    worlds = [servers(name) for name in names]
    for world in worlds:
        assert world.join(hub.address, hub.token(world.name), "--name", world.name).returncode == 0
        world.start_agent()
        world.start_uplink()
    for world in worlds:
        wait_online(hub.hub, world.name)
    from support.config_factory import TEST_TOKEN

    from fmappliance.dashboard.agent_client import AgentClient

    # The dashboard's own server (fleet.local_name) is a row too, through its local agent socket.
    local = AgentClient("http://unused", TEST_TOKEN, 10, socket_path=worlds[0].socket_path)
    client = _signed_in_dashboard(hub, local_agent=local)
    rows = client.get("/fleet", headers={"Accept": "application/json"}).json()["servers"]
    assert [(r["name"], r["state"], r["stacks_total"]) for r in rows] == sorted(
        [(n, "online", 2) for n in [*names, "local"]]
    )
    # Each answers for itself: a backup on one is published on that server only.
    answer = hub.client("erp-3").action("backup_site", "prod", "site2.example.com")
    wait_for(
        lambda: hub.client("erp-3").job(answer["job"]["id"])["status"] == "succeeded", 60, "the backup", interval=0.3
    )
    assert [bool(w.world.published("prod", "site2.example.com")) for w in worlds] == [False, False, True, False, False]


def test_one_token_joins_once_even_when_two_servers_race(hub, servers):
    import subprocess
    import sys

    hub.start()
    token = hub.token()
    worlds = [servers("erp-x"), servers("erp-y")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fmappliance.agent", "--config", str(w.config_path), "fleet", "join", hub.address]
            + ["--name", w.name, "--wait", "0"],
            env={**os.environ, "FM_JOIN_TOKEN": token},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in worlds
    ]
    results = sorted((p.wait(60), p.stderr.read()) for p in procs)
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    assert [code for code, _ in results] == [0, 6], results
    assert "already used at" in results[1][1]
    assert len(json.loads(hub.cli("list", "--json").stdout)["servers"]) == 1


def test_a_link_with_every_connection_busy_says_so(hub, servers):
    hub.start()
    world = servers("erp-b")
    assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
    uplink_json = world.fleet_dir / "uplink.json"
    uplink_json.write_text(json.dumps({**json.loads(uplink_json.read_text()), "max": 2}))
    world.start_agent()
    world.start_uplink()
    wait_online(hub.hub, "erp-b")
    streams = [hub.client("erp-b").open_log_stream("prod", "backend", tail=1, follow=True) for _ in range(2)]
    try:
        with pytest.raises(AgentError) as busy:
            hub.client("erp-b").stacks()
        assert busy.value.status == 503
        assert busy.value.message == (
            "server erp-b is busy: all its link's connections are in use; try again in a moment."
        )
    finally:
        for stream in streams:
            stream.close()
    wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] >= 1, 10, "a connection to come back")
    assert hub.client("erp-b").stacks()["stacks"]
