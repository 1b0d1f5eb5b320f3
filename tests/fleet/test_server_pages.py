"""The dashboard's pages under /s/<server>/ through real links: two servers with a stack named ``prod``.

A real hub, two server worlds (doubles, agent on a Unix socket, uplink), the dashboard app in this
process with the fleet view over that hub, a signed-in browser-like client.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from support.fleet_world import joined_fleet
from support.polling import wait_for
from support.wsgi import WSGIClient

from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.fleet_client import FleetView

pytestmark = pytest.mark.slow
JSON = {"Accept": "application/json"}


@pytest.fixture
def fleet(tmp_path):
    with joined_fleet(tmp_path, ("erp-b", "erp-c"), unreachable_after=2) as (hub, worlds):
        app = make_app(hub.config)
        app.ctx.services.fleet_view = FleetView(hub.hub, hub.registry, hub.config)
        client = WSGIClient(app)
        assert client.login().status == 303
        yield hub, worlds, client


def test_each_server_is_operated_under_its_prefix_and_two_prods_never_mix(fleet):
    hub, (erp_b, erp_c), client = fleet

    # /fleet: one row per server, with the schedule set each agent applied (erp-c has none yet).
    hub.client("erp-b").request("PUT", "/schedules", {"version": 3, "catchup_hours": 6, "schedules": []})
    rows = {r["name"]: r for r in client.get("/fleet", headers=JSON).json()["servers"]}
    assert (rows["erp-b"]["schedules_version"], rows["erp-c"]["schedules_version"]) == (3, None)

    # Status: each prefix reaches its own agent's prod (each world's own compose file path).
    paths = {}
    for world in (erp_b, erp_c):
        answer = client.get(f"/s/{world.name}/stack/prod", headers=JSON)
        assert answer.status == 200, answer.text
        paths[world.name] = answer.json()["stack"]["path"]
        assert str(world.world.root) in paths[world.name]
    assert paths["erp-b"] != paths["erp-c"]
    page = client.get("/s/erp-c/dashboard")
    assert page.status == 200 and 'href="/s/erp-c/stack/prod"' in page.text

    # A backup through the page's form, its job followed under the same prefix; only erp-b has it.
    token = client.page_token("/s/erp-b/dashboard")
    answer = client.post("/s/erp-b/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers=JSON)
    assert answer.status == 202, answer.text
    job_id = answer.json()["job"]["id"]
    job = wait_for(
        lambda: (
            (j := client.get(f"/s/erp-b/jobs/{job_id}", headers=JSON).json())["status"] in ("succeeded", "failed") and j
        ),
        60,
        "the backup on erp-b to end",
        interval=0.3,
    )
    assert job["status"] == "succeeded", job
    assert erp_b.world.published("prod", "site1.example.com")
    assert not erp_c.world.published("prod", "site1.example.com")
    assert client.get(f"/s/erp-c/jobs/{job_id}", headers=JSON).status == 404

    # The download, relayed through the link, whole and with a Range, equals the file on erp-b's disk.
    backups = client.get("/s/erp-b/backups/prod/site1.example.com", headers=JSON).json()
    backup = backups["backups"][0]
    name = next(f["name"] for f in backup["files"] if f["name"].endswith(".sql.gz"))
    on_disk = (erp_b.world.root / "backups" / "prod" / "site1.example.com" / name).read_bytes()
    url = f"/s/erp-b/download/prod/site1.example.com/{name}"
    whole = client.get(url)
    assert whole.status == 200, whole.text
    assert hashlib.sha256(whole.body).hexdigest() == hashlib.sha256(on_disk).hexdigest()
    part = client.get(url, headers={"Range": "bytes=3-11"})
    assert part.status == 206 and part.body == on_disk[3:12]
    assert client.get(f"/s/erp-c/download/prod/site1.example.com/{name}").status == 404

    # A live log of erp-c's prod, not erp-b's.
    erp_c.world.doubles.write_log(erp_c.world.compose_project, "backend", "only on erp-c")
    erp_b.world.doubles.write_log(erp_b.world.compose_project, "backend", "only on erp-b")
    stream = client.stream("GET", "/s/erp-c/stack/prod/logs/stream?service=backend&tail=20")
    try:
        assert stream.status == 200, stream.status_line
        seen = b""
        deadline = time.monotonic() + 15
        for chunk in stream.chunks:
            seen += bytes(chunk)
            if b"only on erp-c" in seen or time.monotonic() > deadline:
                break
        assert b"only on erp-c" in seen and b"only on erp-b" not in seen
    finally:
        stream.close()

    # erp-c's uplink stops: its pages say so, its actions are refused at once with the sentence.
    erp_c.uplink.kill()
    erp_c.uplink.wait()
    wait_for(lambda: hub.hub.state("erp-c")["state"] == "unreachable", 15, "erp-c unreachable")
    started = time.monotonic()
    refused = client.post("/s/erp-c/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers=JSON)
    assert time.monotonic() - started < 1
    assert refused.status == 503
    assert refused.json()["message"].startswith("server erp-c is unreachable since ")
    page = client.get("/s/erp-c/dashboard")
    assert "server erp-c is unreachable since " in page.text
    # erp-b goes on as before.
    assert client.get("/s/erp-b/stack/prod", headers=JSON).status == 200


def test_a_followed_log_resumes_after_the_uplink_drops_and_comes_back(fleet):
    """Issue 24 §4: live logs over the link resume after a drop; the lines both streams hold are sent once."""
    hub, (erp_b, _), client = fleet
    project = erp_b.world.compose_project
    erp_b.world.doubles.write_log(project, "backend", "line before the drop")
    stream = client.stream("GET", "/s/erp-b/stack/prod/logs/stream?service=backend&tail=20")
    seen = b""
    chunks = iter(stream.chunks)

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal seen
        deadline = time.monotonic() + timeout
        while marker not in seen:
            assert time.monotonic() < deadline, f"{marker!r} not seen in {seen[-2000:]!r}"
            seen += bytes(next(chunks, b"<END OF STREAM>"))
            assert not seen.endswith(b"<END OF STREAM>"), seen[-2000:]

    try:
        assert stream.status == 200, stream.status_line
        read_until(b"line before the drop")
        erp_b.uplink.kill()
        erp_b.uplink.wait()
        read_until(b"event: status\ndata: Connection lost (server erp-b is unreachable")
        erp_b.world.doubles.write_log(project, "backend", "line while the link was down")
        erp_b.start_uplink()
        read_until(b"event: status\ndata: Resumed after a lost connection.")
        read_until(b"line while the link was down\n\n")
        erp_b.world.doubles.write_log(project, "backend", "line after the link came back")
        read_until(b"line after the link came back\n\n")
    finally:
        stream.close()
    assert seen.count(b"line before the drop\n") == 1, "lines the page has are not sent again"
    assert b"event: end" not in seen
