"""The product's core promise, end to end with the real processes: a schedule produces a verified
backup, and a test-restore schedule proves the site restorable.

Both are also the upgrade from the release whose dashboard ran schedules itself: its state DB says
the schedule was last handled an hour ago, and its daily time passed a few minutes ago while it was
down. The new dashboard hands the schedule to the real agent (over the docker/fm doubles) with
``handled_through``; the agent catches the due time up once (``bench backup`` and a verified
backup, or ``test_restore`` of the newest verified backup into a throwaway site and its proof), and
the dashboard shows the agent's caught-up, succeeded run; starting the dashboard again runs nothing
again. A scheduled backup of an fm bench that needs ``fm migrate`` fails and is notified with why."""

from __future__ import annotations

import hashlib
import http.cookiejar
import json
import re
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.config_factory import TEST_PASSWORD, TEST_USER
from support.polling import wait_for
from support.world import (
    COMPOSE_SITES,
    build_world,
    kill_hanging_doubles,
    start_agent,
    start_agent_and_dashboard,
    start_dashboard,
)

from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.wire import parse_timestamp

pytestmark = pytest.mark.slow

SITE = COMPOSE_SITES[0]


def verified_manifests(base_path: str, stack: str, site: str) -> list[dict]:
    site_dir = Path(base_path) / stack / site
    found = [json.loads(p.read_text()) for p in sorted(site_dir.glob("*.json"))] if site_dir.is_dir() else []
    return [
        m for m in found if isinstance(m.get("files"), list) and m.get("site") == site and m.get("verified") is True
    ]


class Operator:
    """Signed in to the dashboard over HTTP, as a browser would be (cookie, CSRF token, Origin)."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        with self.opener.open(url + "/login", timeout=10) as res:
            token = re.search(r'name="csrf_token" value="([^"]+)"', res.read().decode()).group(1)
        form = urllib.parse.urlencode({"username": TEST_USER, "password": TEST_PASSWORD, "csrf_token": token}).encode()
        request = urllib.request.Request(url + "/login", data=form, headers={"Origin": url})
        with self.opener.open(request, timeout=10) as res:
            assert res.url.endswith("/dashboard"), res.url

    def json(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
        with self.opener.open(request, timeout=10) as res:
            return json.loads(res.read())


def restart_dashboard(world, dashboard) -> tuple:
    """Stop the dashboard (cleanly, on SIGTERM), start it again, sign in, and wait for its push at start."""
    assert dashboard.stop() == 0, "the dashboard did not stop cleanly on SIGTERM"
    dashboard = start_dashboard(world)
    operator = Operator(dashboard.url)
    wait_for(lambda: operator.json("/scheduler")["agent"]["state"] == "applied", 20, "the push at start")
    return dashboard, operator


def badges(operator) -> list[str]:
    """The restore-test badges of the sites on /dashboard ("restorable, proven …", "never proven", …)."""
    with operator.opener.open(operator.url + "/dashboard", timeout=10) as res:
        page = res.read().decode()
    return re.findall(r'<span class="badge badge-(?:ok|bad|unknown)" title="[^"]*">([^<]+)</span>', page)


# kind of the schedule -> the action the agent runs for it
SCHEDULED_ACTION = {"backup": "backup_site", "test_restore": "test_restore"}


@pytest.mark.parametrize("kind", ["backup", "test_restore"])
def test_a_schedule_missed_while_the_dashboard_was_down_is_caught_up_once_at_start(tmp_path, kind):
    world = build_world(tmp_path)
    base_path = world.config["backups"]["base_path"]
    agent = start_agent(world)
    dashboard = None
    try:
        made = None
        if kind == "test_restore":  # something to prove: a verified backup taken by hand
            status, answer = agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
            assert status == 202, answer
            assert agent.wait_job(answer["job"]["id"])["status"] == "succeeded"
            [made] = verified_manifests(base_path, "prod", SITE)
        else:
            assert verified_manifests(base_path, "prod", SITE) == []

        now = datetime.now(timezone.utc)
        due = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
        schedules = [
            {
                "kind": kind,
                "stack": "prod",
                "site": SITE,
                "frequency": "daily",
                "time": f"{due:%H:%M}",
                "timezone": "UTC",
            }
        ]
        world.write_config(schedules=schedules, dashboard={"agent_url": agent.url, "port": 0})
        # The dashboard last ran an hour ago (it tracked the schedule then, never ran it) and was
        # down when the schedule came due. A schedule seen for the first time is not "missed".
        store = ScheduleStore(
            world.config["dashboard"]["state_dir"], config_schedules=world.config["schedules"], default_tz="UTC"
        )
        [schedule] = store.list()
        assert schedule["kind"] == kind
        store.set_last_due(schedule["id"], now - timedelta(hours=1))
        assert store.last_run(schedule["id"]) is None

        dashboard = start_dashboard(world)
        operator = Operator(dashboard.url)

        # The dashboard shows the run as a catch-up with the agent's job, which succeeded.
        def handed():
            [listed] = operator.json("/scheduler")["schedules"]
            run = listed["last_run"]
            return run if run and run["job_id"] else None

        run = wait_for(handed, 20, "the page to show the agent's run")
        assert run["catch_up"] is True and run["site"] == SITE and parse_timestamp(run["due"]) == due
        assert run["result"] in ("catch-up", "succeeded")  # running, or already done
        assert operator.json("/scheduler")["agent"] == {"version": 1, "state": "applied"}

        def ended_job():
            job = operator.json(f"/jobs/{run['job_id']}")
            return job if job["status"] in ("succeeded", "failed") else None

        job = wait_for(ended_job, 60, f"the {kind} job to end")
        assert job["status"] == "succeeded", job
        assert job["action"] == SCHEDULED_ACTION[kind] and (job["stack"], job["site"]) == ("prod", SITE)
        # The agent recorded the outcome on the schedule.
        wait_for(
            lambda: operator.json("/scheduler")["schedules"][0]["last_run"]["job_status"] == "succeeded",
            10,
            "the schedule to show the succeeded run",
        )
        assert operator.json("/scheduler")["schedules"][0]["kind"] == kind

        manifests = verified_manifests(base_path, "prod", SITE)
        if kind == "backup":
            # Exactly one backup, labelled scheduled, every part as its manifest says.
            [manifest] = manifests
            site_dir = Path(base_path) / "prod" / SITE
            assert {f["part"] for f in manifest["files"]} >= {"database"}
            assert manifest["label"] == "scheduled", "the scheduler asks for its backups to be labelled scheduled"
            for entry in manifest["files"]:
                data = (site_dir / entry["name"]).read_bytes()
                assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"]), entry["name"]
        else:
            # The proof is the agent's, of the backup made above; the schedule made no backup.
            assert [m["id"] for m in manifests] == [made["id"]]
            [prod] = [s for s in agent.request("GET", "/stacks")[1]["stacks"] if s["name"] == "prod"]
            proof = prod["last_restore_tests"][SITE]
            assert proof["ok"] is True and proof["backup"] == made["id"] and proof["source"] == "local"

            # The dashboard shows the site as proven; the other site was never tested.
            def proven():
                found = badges(operator)
                return found if any(b.startswith("restorable, proven") for b in found) else None

            found = wait_for(proven, 20, "the dashboard to show the proof")
            assert len([b for b in found if b.startswith("restorable, proven")]) == 1 and "never proven" in found
        jobs = [j for j in agent.request("GET", "/jobs")[1]["jobs"] if j["action"] == SCHEDULED_ACTION[kind]]
        assert [j["id"] for j in jobs] == [job["id"]], "the catch-up ran once"

        # Starting the dashboard again runs nothing again (the agent handled that due time once,
        # and the hand-over is not repeated).
        dashboard, operator = restart_dashboard(world, dashboard)
        time.sleep(1)
        assert [j["action"] for j in agent.request("GET", "/jobs")[1]["jobs"]].count(SCHEDULED_ACTION[kind]) == 1
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


def test_a_scheduled_backup_of_a_bench_needing_fm_migrate_fails_and_the_notification_says_why(tmp_path):
    from support.webhook_receiver import WebhookReceiver
    from support.world import FM_SITE

    world = build_world(tmp_path)
    (world.bench_path / "bench_config.toml").write_text(
        'name = "erp.localhost"\n[migration_state]\nmigrated_to = "0.19.0"\n'
    )
    sentence = (
        'erp.localhost needs "fm migrate erp.localhost" (its files were written by Frappe Manager v0.19.0, '
        "this is v0.20.0); run it on the server, then retry."
    )
    now = datetime.now(timezone.utc)
    due = (now - timedelta(minutes=3)).replace(second=0, microsecond=0)
    schedules = [{"stack": "erp", "site": FM_SITE, "frequency": "daily", "time": f"{due:%H:%M}", "timezone": "UTC"}]
    webhook = WebhookReceiver()
    notifications = {"webhook_url": webhook.url, "events": ["backup_failed"]}
    world.write_config(schedules=schedules, notifications=notifications)
    store = ScheduleStore(
        world.config["dashboard"]["state_dir"], config_schedules=world.config["schedules"], default_tz="UTC"
    )
    [schedule] = store.list()
    store.set_last_due(schedule["id"], now - timedelta(hours=1))

    agent, dashboard = start_agent_and_dashboard(world, schedules=schedules, notifications=notifications)
    try:
        wait_for(lambda: webhook.received, 40, "the backup_failed notification")
        [payload] = webhook.received
        assert payload["event"] == "backup_failed"
        assert payload["details"]["message"] == sentence
        assert (payload["details"]["stack"], payload["details"]["site"]) == ("erp", FM_SITE)
        [job] = [j for j in agent.request("GET", "/jobs")[1]["jobs"] if j["action"] == "backup_site"]
        assert job["status"] == "failed" and job["message"] == sentence
        assert verified_manifests(world.config["backups"]["base_path"], "erp", FM_SITE) == []
    except BaseException:
        print("--- agent output\n" + agent.output())
        print("--- dashboard output\n" + dashboard.output())
        raise
    finally:
        dashboard.ensure_stopped()
        agent.stop()
        webhook.close()
        kill_hanging_doubles(world.doubles)
