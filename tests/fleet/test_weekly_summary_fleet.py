"""The weekly summary covers every server's schedules, not only the dashboard's own (issue 24).

Real hub and links: the dashboard's own agent (world hq, not joined) and a joined server erp-b, each
with a stack named prod and one schedule; the summary names erp-b's lines and its restore proofs,
and still goes out, with what is known, while erp-b is cut off.
"""

from __future__ import annotations

import pytest
from support.config_factory import TEST_TOKEN
from support.fleet_world import FleetHub, ServerWorld, wait_online
from support.polling import wait_for
from support.world import COMPOSE_SITES

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.fleet_client import FleetView
from fmappliance.dashboard.fleet_schedules import FleetSchedules
from fmappliance.dashboard.scheduler import scheduler_from_config

pytestmark = pytest.mark.slow
SITE = COMPOSE_SITES[0]


class _Notes:
    def __init__(self):
        self.sent = []

    def notify(self, event, subject, details):
        self.sent.append((event, subject, details))


def test_the_weekly_summary_covers_every_server(tmp_path):
    hub = FleetHub(tmp_path / "hub", unreachable_after=2)
    hub.init()
    hub.start()
    hq = ServerWorld(tmp_path / "hq", "hq")
    erp_b = ServerWorld(tmp_path / "erp-b", "erp-b")
    try:
        assert erp_b.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        hq.start_agent()
        erp_b.start_agent()
        erp_b.start_uplink()
        wait_online(hub.hub, "erp-b")
        local = AgentClient("http://unused", TEST_TOKEN, 10, socket_path=hq.socket_path)
        scheduler = scheduler_from_config(
            hub.config,
            local,
            list_sites=lambda stack: [SITE],
            restore_proofs=lambda: local.request("GET", "/stacks")[1],
        )
        fleet = FleetSchedules(scheduler.sync, FleetView(hub.hub, hub.registry, hub.config, local_agent=local))
        scheduler.fleet, scheduler.fleet_syncs = fleet, fleet.syncs
        for server in (None, "erp-b"):
            scheduler.store.add(
                {"stack": "prod", "site": SITE, "frequency": "daily", "time": "03:00", "timezone": "UTC"}
                | ({"server": server} if server else {}),
                "admin",
            )
        notes = _Notes()
        scheduler._notifier = notes

        scheduler.send_weekly_summary()
        [(event, subject, details)] = notes.sent
        assert event == "weekly_summary"
        assert subject == "Backups: all 2 schedule(s) ran on 2 servers"
        assert details["schedules"] == 2
        assert details["servers"]["erp-b"]["schedules"] == 1
        never = f"prod/{SITE}: never proven restorable (no test restore yet)"
        assert never in details["restore_proofs"]  # the dashboard's own server
        assert never in details["servers"]["erp-b"]["restore_proofs"]  # erp-b's, through its link
        assert "\nerp-b:\n  erp/" in details["message"] and details["message"].count(never) == 2

        # erp-b is cut off: the summary still goes out, its schedule counted, its proofs unknown.
        erp_b.uplink.kill()
        erp_b.uplink.wait()
        wait_for(lambda: hub.hub.state("erp-b")["state"] == "unreachable", 15, "erp-b unreachable")
        notes.sent.clear()
        scheduler.send_weekly_summary()
        [(_, subject, details)] = notes.sent
        assert subject == "Backups: all 2 schedule(s) ran on 2 servers"
        assert details["servers"]["erp-b"] == {
            "schedules": 1,
            "broken": 0,
            "failed_last_run": 0,
            "restore_proofs": ["unknown: the agent could not be asked for the last test restores"],
        }
    finally:
        erp_b.stop()
        hq.stop()
        hub.stop()


def test_a_fleet_server_s_broken_and_failed_schedules_are_named_with_it():
    from fmappliance.dashboard.notifications import weekly_summary

    ok = {"stack": "prod", "site": SITE, "status": "ok", "last_run": {"result": "succeeded"}}
    failed = {**ok, "last_run": {"result": "failed", "message": "bench backup failed"}}
    broken = {**ok, "status": "broken", "broken_reason": "site is gone"}
    subject, details = weekly_summary([ok], None, [("erp-b", [failed, broken], None), ("erp-c", [], None)])
    assert subject == "Backups: 3 schedule(s), 1 broken, 1 with a failed last run on 3 servers"
    assert details["failed_last_run"] == [f"erp-b: prod/{SITE}: bench backup failed"]
    assert details["broken"] == [f"erp-b: prod/{SITE}: site is gone"]
    assert details["servers"]["erp-c"]["schedules"] == 0
