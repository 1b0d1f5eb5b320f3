"""Schedules on the real agent process (no dashboard at all): PUT/GET /schedules over HTTP, a due
backup run on time, catch-up and missed after the agent was down, a kill -9 during pushes, and an
unreadable schedules.json at start."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.polling import wait_for
from support.world import COMPOSE_SITES, AgentProcess

from fmappliance.wire import format_timestamp, parse_timestamp

pytestmark = pytest.mark.slow

SITE = COMPOSE_SITES[0]


def entry(schedule_id: str, at: datetime, **kw) -> dict:
    return {
        "id": schedule_id,
        "kind": "backup",
        "stack": "prod",
        "site": SITE,
        "frequency": "daily",
        "time": f"{at:%H:%M}",
        "day_of_week": None,
        "day_of_month": None,
        "timezone": "UTC",
        "enabled": True,
        **kw,
    }


def manifests(world, stack: str, site: str) -> list[dict]:
    site_dir = Path(world.config["backups"]["base_path"]) / stack / site
    found = [json.loads(p.read_text()) for p in sorted(site_dir.glob("*.json"))] if site_dir.is_dir() else []
    return [m for m in found if m.get("site") == site and m.get("verified") is True]


def shown(agent, schedule_id: str) -> dict:
    status, body = agent.request("GET", "/schedules")
    assert status == 200, body
    return next(s for s in body["schedules"] if s["id"] == schedule_id)


def test_put_and_get_schedules_over_http(world, agent_process):
    agent = agent_process()
    now = datetime.now(timezone.utc)
    body = {"version": 3, "catchup_hours": 6, "schedules": [entry("s1", now + timedelta(hours=2))]}
    assert agent.request("PUT", "/schedules", body, token=None)[0] == 401
    assert agent.request("PUT", "/schedules", body) == (200, {"success": True, "applied_version": 3, "changed": True})
    assert agent.request("PUT", "/schedules", body)[1]["changed"] is False

    bad = {**body, "version": 4, "schedules": [entry("s1", now), {**entry("s2", now), "time": "7 pm"}]}
    status, answer = agent.request("PUT", "/schedules", bad)
    assert status == 400 and answer["field"] == "time" and answer["entry"] == 1
    assert answer["message"].startswith('schedules[1] (id "s2"): time: ')
    status, answer = agent.request("PUT", "/schedules", {**body, "version": 2})
    assert (status, answer["message"]) == (409, "schedule version 2 is older than the applied 3")

    status, listed = agent.request("GET", "/schedules")
    assert status == 200 and listed["version"] == 3 and parse_timestamp(listed["received"])
    [item] = listed["schedules"]
    assert item["id"] == "s1" and item["last_handled"] is None and item["missed_total"] == 0
    assert parse_timestamp(item["next_due"]) > now
    assert agent.request("GET", "/schedules/history?after=0")[1]["runs"] == []
    assert agent.request("GET", "/schedules/history?after=x")[0] == 400
    state = Path(world.config["agent"]["state_dir"]) / "schedules.json"
    assert state.stat().st_mode & 0o777 == 0o600


def test_a_due_backup_schedule_runs_on_time_with_no_dashboard(world, agent_process):
    agent = agent_process()
    # The next whole minute at least 5 s away (schedules are HH:MM).
    due = (datetime.now(timezone.utc) + timedelta(seconds=65)).replace(second=0, microsecond=0)
    body = {"version": 1, "catchup_hours": 6, "schedules": [entry("nightly", due)]}
    assert agent.request("PUT", "/schedules", body)[0] == 200

    def started():
        jobs = agent.request("GET", "/jobs")[1]["jobs"]
        return [j for j in jobs if j["action"] == "backup_site"] or None

    [job] = wait_for(started, 80, "the scheduled backup to start")
    assert (parse_timestamp(job["created"]) - due).total_seconds() <= 2, "due -> job created within 2 s"
    job = agent.wait_job(job["id"], timeout=60)
    assert job["status"] == "succeeded", job
    [manifest] = manifests(world, "prod", SITE)
    assert manifest["label"] == "scheduled"
    handled = shown(agent, "nightly")["last_handled"]
    assert handled == {**handled, "due": format_timestamp(due), "job": job["id"], "status": "succeeded"}
    assert shown(agent, "nightly")["lateness_seconds"] <= 2


def test_after_the_agent_was_down_a_recent_due_time_is_caught_up_and_an_old_one_missed(world, agent_process):
    agent = agent_process()
    # A verified backup exists, so the test-restore schedule has something to prove.
    status, answer = agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
    assert agent.wait_job(answer["job"]["id"], timeout=60)["status"] == "succeeded"
    now = datetime.now(timezone.utc)
    recent = (now - timedelta(minutes=10)).replace(second=0, microsecond=0)
    old = (now - timedelta(hours=3)).replace(second=0, microsecond=0)
    schedules = [entry("recent", recent), entry("proof", recent, kind="test_restore"), entry("old", old)]
    assert agent.request("PUT", "/schedules", {"version": 1, "catchup_hours": 1, "schedules": schedules})[0] == 200
    assert agent.stop() == 0

    # As if the agent had been down since yesterday: the file says "handled through" a day ago.
    path = Path(world.config["agent"]["state_dir"]) / "schedules.json"
    book = json.loads(path.read_text())
    for state in book["state"].values():
        state["last_due"] = format_timestamp(now - timedelta(days=1))
    path.write_text(json.dumps(book))

    agent = agent_process()

    def handled(schedule_id):
        last = shown(agent, schedule_id)["last_handled"]
        return last if last and (last["job"] or last["status"] == "missed") else None

    backup = wait_for(lambda: handled("recent"), 10, "the catch-up to be recorded")
    assert backup["status"] in ("catch-up", "succeeded") and backup["catch_up"] is True
    assert backup["due"] == format_timestamp(recent)
    assert agent.wait_job(backup["job"], timeout=60)["status"] == "succeeded"
    assert shown(agent, "recent")["last_handled"]["status"] == "succeeded"
    assert sorted(m["label"] for m in manifests(world, "prod", SITE)) == ["manual", "scheduled"]

    proof = wait_for(lambda: handled("proof"), 10, "the test restore to be recorded")
    job = agent.wait_job(proof["job"], timeout=90)
    assert job["action"] == "test_restore" and job["status"] == "succeeded", job
    tested = agent.request("GET", "/stacks/prod")[1]["stack"]["last_restore_tests"][SITE]
    assert tested and tested["backup"] in {m["id"] for m in manifests(world, "prod", SITE)}

    missed = shown(agent, "old")
    assert missed["last_handled"]["status"] == "missed" and missed["missed_total"] == 1
    assert "runs more than 1 h late are not made up" in missed["last_handled"]["message"]
    history = agent.request("GET", "/schedules/history")[1]["runs"]
    assert [r["schedule"] for r in history if r["status"] == "missed"] == ["old"]
    # Nothing runs twice after another restart.
    agent.stop()
    agent = agent_process()
    time.sleep(1)
    actions = [j["action"] for j in agent.request("GET", "/jobs")[1]["jobs"]]
    assert actions.count("backup_site") == 2 and actions.count("test_restore") == 1


def test_the_metrics_carry_the_schedule_series(world, agent_process):
    import urllib.request

    from support.config_factory import TEST_TOKEN

    agent = agent_process()
    now = datetime.now(timezone.utc)
    body = {"version": 1, "catchup_hours": 6, "schedules": [entry("s1", now + timedelta(hours=2))]}
    agent.request("PUT", "/schedules", body)
    req = urllib.request.Request(agent.url + "/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        text = res.read().decode()
    labels = f'schedule="s1",stack="prod",site="{SITE}"'
    assert f"fmappliance_schedule_lateness_seconds{{{labels}}} 0" in text
    assert f"fmappliance_schedule_missed_total{{{labels}}} 0" in text


def test_kill_9_during_pushes_leaves_a_whole_set(world):
    state = Path(world.config["agent"]["state_dir"]) / "schedules.json"
    now = datetime.now(timezone.utc)
    pushed: dict[int, int] = {}
    for attempt in range(4):
        agent = AgentProcess(world.config_path, 0, world.root / f"agent-{attempt}.log").start()
        stop = threading.Event()

        def push_many(agent=agent, stop=stop, attempt=attempt):
            version = attempt * 1000
            while not stop.is_set():
                version += 1
                count = random.randint(50, 150)
                schedules = [entry(f"s{i}", now + timedelta(hours=2, minutes=i)) for i in range(count)]
                pushed[version] = count
                try:
                    agent.request("PUT", "/schedules", {"version": version, "catchup_hours": 6, "schedules": schedules})
                except OSError:
                    return

        thread = threading.Thread(target=push_many)
        thread.start()
        time.sleep(random.uniform(0.5, 1.5))
        agent.kill()
        stop.set()
        thread.join(10)
        book = json.loads(state.read_text())  # never half-written
        assert len(book["schedules"]) == pushed[book["version"]]
        restarted = AgentProcess(world.config_path, 0, world.root / f"agent-{attempt}b.log").start()
        try:
            status, listed = restarted.request("GET", "/schedules")
            assert status == 200 and listed["version"] == book["version"]
            assert len(listed["schedules"]) == pushed[book["version"]]
            # A temp file the kill left behind is removed at start.
            assert [p.name for p in state.parent.iterdir() if p.name.startswith(".schedules-")] == []
        finally:
            restarted.stop()


def test_an_unreadable_schedule_file_stops_the_agent_with_one_line(world):
    state = Path(world.config["agent"]["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    (state / "schedules.json").write_text('{"format": 1, "schedules": [')
    proc = subprocess.run(
        [sys.executable, "-m", "fmappliance.agent", "--config", str(world.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "schedules.json" in line]
    assert len(errors) == 1 and "not valid JSON" in errors[0] and "Traceback" not in proc.stderr


def test_a_set_of_500_schedules_is_taken_and_a_bigger_one_refused(world, agent_process):
    agent = agent_process()
    later = datetime.now(timezone.utc) + timedelta(hours=3)
    many = [entry(f"schedule-{i:04d}", later + timedelta(minutes=i)) for i in range(501)]
    status, answer = agent.request("PUT", "/schedules", {"version": 1, "catchup_hours": 6, "schedules": many[:500]})
    assert status == 200, answer
    status, answer = agent.request("PUT", "/schedules", {"version": 2, "catchup_hours": 6, "schedules": many})
    assert status == 400 and answer["field"] == "schedules" and "at most 500" in answer["message"]
    assert len(agent.request("GET", "/schedules")[1]["schedules"]) == 500
