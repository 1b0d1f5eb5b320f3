"""A test-restore schedule proves a site restorable, end to end with the real processes.

The real agent (over the docker/fm doubles) makes a verified backup; the real dashboard then
starts with a config.yaml ``kind: test_restore`` schedule whose daily time passed a few minutes
ago while it was down. It hands the schedule to the agent, which catches the run up with
``test_restore`` (not a backup), restores the newest verified backup into a throwaway site and
records the proof; the dashboard shows the run as succeeded and the site's badge as
"restorable, proven …".
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from support.polling import wait_for
from support.world import COMPOSE_SITES, build_world, kill_hanging_doubles, start_agent, start_dashboard
from test_scheduled_backup_e2e import Operator, verified_manifests

from fmappliance.dashboard.schedule_store import ScheduleStore

pytestmark = pytest.mark.slow

SITE = COMPOSE_SITES[0]


def test_a_scheduled_test_restore_proves_the_site_and_the_dashboard_shows_it(tmp_path):
    world = build_world(tmp_path)
    base_path = world.config["backups"]["base_path"]
    agent = start_agent(world)
    dashboard = None
    try:
        status, answer = agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
        assert status == 202, answer
        assert agent.wait_job(answer["job"]["id"])["status"] == "succeeded"
        [made] = verified_manifests(base_path, "prod", SITE)

        now = datetime.now(timezone.utc)
        due = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
        schedules = [
            {
                "kind": "test_restore",
                "stack": "prod",
                "site": SITE,
                "frequency": "daily",
                "time": f"{due:%H:%M}",
                "timezone": "UTC",
            }
        ]
        world.write_config(schedules=schedules, dashboard={"agent_url": agent.url, "port": 0})
        store = ScheduleStore(
            world.config["dashboard"]["state_dir"], config_schedules=world.config["schedules"], default_tz="UTC"
        )
        [schedule] = store.list()
        assert schedule["kind"] == "test_restore"
        store.set_last_due(schedule["id"], now - timedelta(hours=1))  # tracked an hour ago, down when due

        dashboard = start_dashboard(world)
        operator = Operator(dashboard.url)

        def submitted_run():
            [listed] = operator.json("/scheduler")["schedules"]
            run = listed["last_run"]
            return run if run and run["job_id"] else None

        run = wait_for(submitted_run, 20, "the agent to start the scheduled test restore")
        assert run["catch_up"] is True and run["site"] == SITE

        def ended_job():
            job = operator.json(f"/jobs/{run['job_id']}")
            return job if job["status"] in ("succeeded", "failed") else None

        job = wait_for(ended_job, 60, "the test restore job to end")
        assert job["status"] == "succeeded", job
        assert job["action"] == "test_restore" and (job["stack"], job["site"]) == ("prod", SITE)

        def listed_done():
            [listed] = operator.json("/scheduler")["schedules"]
            return listed if listed["last_run"]["job_status"] == "succeeded" else None

        listed = wait_for(listed_done, 10, "the schedule to show the succeeded test restore")
        assert listed["kind"] == "test_restore"

        # The proof is the agent's, of the backup made above; no backup was made by the schedule.
        status, stacks = agent.request("GET", "/stacks")
        [prod] = [s for s in stacks["stacks"] if s["name"] == "prod"]
        proof = prod["last_restore_tests"][SITE]
        assert proof["ok"] is True and proof["backup"] == made["id"] and proof["source"] == "local"
        assert [m["id"] for m in verified_manifests(base_path, "prod", SITE)] == [made["id"]]
        assert [j["action"] for j in agent.request("GET", "/jobs")[1]["jobs"]].count("backup_site") == 1

        # The dashboard shows the site as proven; the other site was never tested.
        def badges():
            with operator.opener.open(dashboard.url + "/dashboard", timeout=10) as res:
                page = res.read().decode()
            found = re.findall(r'<span class="badge badge-(?:ok|bad|unknown)" title="[^"]*">([^<]+)</span>', page)
            proven = [b for b in found if b.startswith("restorable, proven")]
            return (proven, found) if proven else None

        proven, found = wait_for(badges, 20, "the dashboard to show the proof")
        assert len(proven) == 1 and "never proven" in found
        assert dashboard.stop() == 0, "the dashboard did not stop cleanly on SIGTERM"
    except BaseException:
        print("--- agent output\n" + agent.output())
        if dashboard is not None:
            print("--- dashboard output\n" + dashboard.output())
        raise
    finally:
        if dashboard is not None:
            dashboard.ensure_stopped()
        agent.stop()
        kill_hanging_doubles(world.doubles)
