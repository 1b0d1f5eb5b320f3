"""A fleet server's schedule runs while it is cut off from the dashboard, and its failure is notified
exactly once, naming the server, after its link is back (issue 24 §6).

Real hub, a real server world (doubles, agent on its Unix socket, uplink process); the dashboard's
side is the schedule store and the per-server sync (fleet_schedules.py) over the hub's link.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from support.config_factory import TEST_TOKEN
from support.fleet_world import FleetHub, ServerWorld, wait_online
from support.polling import wait_for
from support.world import COMPOSE_SITES

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.fleet_client import FleetView
from fmappliance.dashboard.fleet_schedules import FleetSchedules
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.schedule_sync import ScheduleSync

pytestmark = pytest.mark.slow
SITE = COMPOSE_SITES[0]


def test_a_cut_off_server_runs_its_schedule_and_its_failure_is_notified_once_when_back(tmp_path):
    hub = FleetHub(tmp_path / "hub", unreachable_after=2)
    hub.init()
    hub.start()
    world = ServerWorld(tmp_path / "erp-b", "erp-b")
    try:
        assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        world.start_agent()
        world.start_uplink()
        wait_online(hub.hub, "erp-b")
        direct = AgentClient("http://unused", TEST_TOKEN, 10, socket_path=world.socket_path)

        # The dashboard's side: its schedule store with one schedule for erp-b's prod, due at the next
        # whole minute at least 15 s away; pushed to erp-b through its link.
        now = lambda: datetime.now(timezone.utc)  # noqa: E731
        store = ScheduleStore(tmp_path / "dash-state", default_tz="UTC")
        due = (now() + timedelta(seconds=75)).replace(second=0, microsecond=0)
        schedule = store.add(
            {
                "stack": "prod",
                "site": SITE,
                "frequency": "daily",
                "time": f"{due:%H:%M}",
                "timezone": "UTC",
                "server": "erp-b",
            },
            "admin",
        )
        sent = []
        local = ScheduleSync(store, None, catchup_hours=6, notify=lambda *a: sent.append(a), clock=now, local_name="hq")
        view = FleetView(hub.hub, hub.registry, hub.config)
        (erp_b,) = FleetSchedules(local, view).syncs()
        assert erp_b.push() and erp_b.state == "applied"
        assert [s["id"] for s in direct.request("GET", "/schedules")[1]["schedules"]] == [schedule["id"]]

        # Cut off: the uplink is killed; the backup will fail on erp-b.
        world.uplink.kill()
        world.uplink.wait()
        wait_for(lambda: hub.hub.state("erp-b")["state"] == "unreachable", 15, "erp-b unreachable")
        world.world.doubles.set_faults(fail={"bench backup": 1})
        assert erp_b.watch() == 0  # nothing can be read now; nothing is lost either

        def failed_run():
            jobs = direct.request("GET", "/jobs")[1]["jobs"]
            return [j for j in jobs if j["action"] == "backup_site" and j["status"] == "failed"]

        wait_for(failed_run, 150, "the scheduled backup to run and fail on the cut-off server", interval=1)
        assert sent == []

        # The link is back: the failure is notified once, naming erp-b.
        world.start_uplink()
        wait_online(hub.hub, "erp-b")
        assert erp_b.watch() == 1
        event, subject, details, _message = sent[0]
        assert event == "backup_failed" and details["server"] == "erp-b" and details["schedule_id"] == schedule["id"]
        assert subject == f"Scheduled backup of {SITE} on prod of server erp-b failed"
        assert erp_b.watch() == 0 and len(sent) == 1
    finally:
        world.stop()
        hub.stop()
