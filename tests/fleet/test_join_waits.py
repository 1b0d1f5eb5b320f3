"""``fm-agent fleet join`` run by hand: it says how to start the uplink (no systemd here), waits until
the hub has the uplink's connections, and says so; without an uplink it gives up after ``--wait``
seconds with a sentence, still joined (exit 0, as in the doc's table)."""

from __future__ import annotations

import json
import time

import pytest
from support.fleet_world import FleetHub, ServerWorld
from support.polling import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(tmp_path):
    fleet_hub = FleetHub(tmp_path / "hub")
    fleet_hub.pin = fleet_hub.init()
    fleet_hub.start()
    yield fleet_hub
    fleet_hub.stop()


@pytest.fixture
def world(tmp_path):
    made = ServerWorld(tmp_path / "erp-b", "erp-b")
    yield made
    made.stop()


def test_join_prints_the_uplink_command_and_returns_once_the_hub_sees_it(hub, world):
    world.start_agent()
    join = world.join_waiting(hub.address, hub.token("erp-b"), "--name", "erp-b", wait=30)
    try:
        told = join.stdout.readline() + join.stdout.readline() + join.stdout.readline()
        assert "Joined the fleet of" in told
        assert f"fm-agent uplink --dir {world.fleet_dir}" in told, told
        time.sleep(2)
        assert join.poll() is None, "join must wait while the hub has not seen the uplink"
        assert hub.hub.state("erp-b")["idle_connections"] == 0
        started = time.monotonic()
        world.start_uplink()
        out, err = join.communicate(timeout=30)
    finally:
        if join.poll() is None:
            join.kill()
    assert join.returncode == 0, err
    assert "The hub sees this server's uplink connected (online)" in out
    assert time.monotonic() - started < 10
    # The probe is never parked: the hub holds the uplink's connections only.
    wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] == 2, 10, "the two idle links")


def test_join_without_an_uplink_gives_up_with_a_sentence_and_stays_joined(hub, world):
    world.start_agent()
    started = time.monotonic()
    done = world.join(hub.address, hub.token("erp-b"), "--name", "erp-b", wait="3")
    assert done.returncode == 0, done.stderr
    assert 3 <= time.monotonic() - started < 20
    assert "has not seen this server's uplink within 3 s (the hub says connecting)" in done.stderr
    assert "this server stays joined" in done.stderr
    status = json.loads(world.fleet("status", "--json").stdout)
    assert status["joined"] and status["server"] == "erp-b"


def test_a_removed_server_s_probe_gets_no_answer(hub, world):
    assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
    assert hub.cli("remove", "erp-b", "--yes").returncode == 0
    from fmappliance.agent.fleet_cli import probe

    wait_for(lambda: isinstance(probe(world.fleet_dir), str), 10, "the removed server's probe to be refused")
    assert "closed the probe without an answer" in probe(world.fleet_dir)
