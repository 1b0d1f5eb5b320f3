"""Issue 23's promise, end to end with the real processes: schedules run while the dashboard is
stopped, and what failed meanwhile is notified exactly once when it is back.

The real dashboard pushes its config.yaml schedules to the real agent (over the docker/fm
doubles) and is stopped.  At the due minute the agent alone starts a scheduled backup (which
fails: ``bench backup`` is broken meanwhile) and a scheduled test restore (which proves the
newest verified backup).  The dashboard then starts, sends one ``backup_failed`` marked "while
the dashboard was down", and a further restart sends nothing more.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from support.polling import wait_for
from support.webhook_receiver import WebhookReceiver
from support.world import COMPOSE_SITES, build_world, kill_hanging_doubles, start_agent, start_dashboard
from test_scheduled_e2e import restart_dashboard

from fmappliance.wire import parse_timestamp

pytestmark = pytest.mark.slow

SITE = COMPOSE_SITES[0]


def test_schedules_run_with_the_dashboard_stopped_and_its_failure_is_notified_once(tmp_path):
    world = build_world(tmp_path)
    webhook = WebhookReceiver()
    agent = start_agent(world)
    dashboard = None
    try:
        status, answer = agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
        assert status == 202 and agent.wait_job(answer["job"]["id"])["status"] == "succeeded"
        proven_backup = agent.request("GET", f"/backups/prod/{SITE}")[1]["backups"][0]["id"]

        # The next whole minute at least 15 s away: time to push and stop the dashboard.
        due = (datetime.now(timezone.utc) + timedelta(seconds=75)).replace(second=0, microsecond=0)
        at = {"frequency": "daily", "time": f"{due:%H:%M}", "timezone": "UTC"}
        world.write_config(
            dashboard={"agent_url": agent.url, "port": 0},
            notifications={"webhook_url": webhook.url, "events": ["backup_failed", "backup_missed"]},
            schedules=[
                {"stack": "prod", "site": SITE, **at},
                {"kind": "test_restore", "stack": "prod", "site": SITE, **at},
            ],
        )
        dashboard = start_dashboard(world)
        wait_for(lambda: len(agent.request("GET", "/schedules")[1]["schedules"]) == 2, 20, "the push")
        assert dashboard.stop() == 0
        dashboard = None

        # The dashboard is down; the backup will fail, the test restore will prove the backup above.
        world.doubles.set_faults(fail={"bench backup": 1})

        def started():
            jobs = agent.request("GET", "/jobs")[1]["jobs"]
            ours = [j for j in jobs if j["action"] in ("backup_site", "test_restore")]
            ours = [j for j in ours if parse_timestamp(j["created"]) >= due]
            return ours if len(ours) == 2 else None

        jobs = wait_for(started, 100, "the agent to start both scheduled jobs")
        for job in jobs:
            assert (parse_timestamp(job["created"]) - due).total_seconds() <= 2, job
            assert agent.wait_job(job["id"], timeout=90)["status"] in ("succeeded", "failed")
        ended = {j["action"]: agent.request("GET", f"/jobs/{j['id']}")[1] for j in jobs}
        assert ended["backup_site"]["status"] == "failed"
        assert ended["test_restore"]["status"] == "succeeded", ended["test_restore"]
        proof = agent.request("GET", "/stacks/prod")[1]["stack"]["last_restore_tests"][SITE]
        assert proof["ok"] is True and proof["backup"] == proven_backup
        listed = {s["kind"]: s for s in agent.request("GET", "/schedules")[1]["schedules"]}
        assert listed["backup"]["last_handled"]["status"] == "failed"
        assert listed["test_restore"]["last_handled"]["status"] == "succeeded"
        assert webhook.received == []

        world.doubles.set_faults()
        dashboard = start_dashboard(world)
        wait_for(lambda: webhook.received, 40, "the failure to be notified")
        time.sleep(2)
        [note] = webhook.received
        assert note["event"] == "backup_failed"
        assert note["subject"].endswith("(while the dashboard was down)")
        assert note["details"]["job_id"] == ended["backup_site"]["id"]
        assert note["details"]["while_dashboard_down"] is True

        # Never twice: another restart of the dashboard sends nothing.
        dashboard, operator = restart_dashboard(world, dashboard)
        time.sleep(3)  # the records are read right after the push
        assert len(webhook.received) == 1
    except BaseException:
        print("--- agent output\n" + agent.output())
        if dashboard is not None:
            print("--- dashboard output\n" + dashboard.output())
        raise
    finally:
        if dashboard is not None:
            dashboard.ensure_stopped()
        agent.stop()
        webhook.close()
        kill_hanging_doubles(world.doubles)
