"""The dashboard's schedule service with injected time: broken marks, the page's status, the
weekly summary, overdue backups, and outcomes of runs the old in-dashboard engine started.
(The agent runs schedules now: tests/agent/test_schedule_runner.py; pushing and notifying:
test_schedule_sync.py.)"""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta, timezone

import pytest

from fmappliance.dashboard.backup_age import overdue_sites
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.scheduler import ScheduleService
from fmappliance.dashboard.schedules import validate_schedule

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class FakeAgent:
    """Answers like the agent: backup_site jobs, de-duplicated while queued/running."""

    def __init__(self, stacks: dict):
        self.stacks = {k: list(v) for k, v in stacks.items()}
        self.jobs: dict[str, dict] = {}
        self.fail_stacks: set[str] = set()
        self.submitted = threading.Event()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def list_sites(self, stack):
        if stack not in self.stacks:
            raise KeyError(stack)  # the agent's 404
        return self.stacks[stack]

    def submit_backup(self, stack, site):
        if stack in self.fail_stacks:
            raise RuntimeError("Agent unreachable at 127.0.0.1:9100: connection refused")
        with self._lock:
            for job in self.jobs.values():
                if (job["stack"], job["site"]) == (stack, site) and job["status"] in ("queued", "running"):
                    return {"success": True, "job": job, "duplicate": True}
            job = {
                "id": f"job{next(self._ids)}",
                "action": "backup_site",
                "stack": stack,
                "site": site,
                "status": "queued",
                "message": "",
            }
            self.jobs[job["id"]] = job
        self.submitted.set()
        return {"success": True, "job": job, "duplicate": False}

    def get_job(self, job_id):
        return self.jobs[job_id]

    def backups_of(self, stack, site):
        return [j for j in self.jobs.values() if (j["stack"], j["site"]) == (stack, site)]


class Notes:
    def __init__(self):
        self.sent = []
        self.events = ("backup_failed", "backup_missed")

    def notify(self, event, subject, details):
        self.sent.append((event, subject, details))

    def of(self, event):
        return [n for n in self.sent if n[0] == event]


STACKS = {"prod": ["site1.example.com", "site2.example.com"], "erp": ["erp.example.com"]}


@pytest.fixture
def clock():
    return Clock(utc(2026, 11, 25, 12, 0))


@pytest.fixture
def agent():
    return FakeAgent(STACKS)


@pytest.fixture
def notes():
    return Notes()


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


def make_store(state_dir, clock, config_schedules=()):
    return ScheduleStore(state_dir, config_schedules=config_schedules, default_tz="UTC", clock=clock)


def make_engine(store, agent, clock, notes=None, **kw):
    return ScheduleService(
        store,
        None,
        list_sites=agent.list_sites,
        notifier=notes,
        clock=clock,
        get_job=agent.get_job,
        **kw,
    )


def add(store, **fields):
    base = {"stack": "erp", "site": "erp.example.com", "frequency": "daily", "time": "02:00", "timezone": "UTC"}
    clean, errors = validate_schedule({**base, **fields}, known_stacks=STACKS, default_tz="UTC")
    assert errors == {}
    return store.add(clean, "admin")


# ---- failures ----------------------------------------------------------------------------


def test_deleted_stack_or_site_marks_the_schedule_broken_without_crashing(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    gone_stack = add(store, time="13:00")
    gone_site = add(store, stack="prod", site="site2.example.com", time="13:00")
    fine = add(store, stack="prod", site="site1.example.com", time="13:00")
    del agent.stacks["erp"]
    agent.stacks["prod"].remove("site2.example.com")
    engine = make_engine(store, agent, clock, notes)
    engine.check_health()
    assert engine.drain(5)
    status = {s["id"]: s for s in engine.status()}
    assert status[gone_stack["id"]]["status"] == "broken"
    assert "no longer exists" in status[gone_stack["id"]]["broken_reason"]
    assert status[gone_site["id"]]["status"] == "broken"
    assert "no longer on stack" in status[gone_site["id"]]["broken_reason"]
    assert status[fine["id"]]["status"] == "ok"
    assert agent.jobs == {}  # the dashboard starts no job: the agent runs schedules
    # The stack comes back: the next check clears the mark.
    agent.stacks["erp"] = ["erp.example.com"]
    engine.check_health()
    assert engine.drain(5)
    assert {s["id"]: s for s in engine.status()}[gone_stack["id"]]["status"] == "ok"


def test_a_stack_removed_while_down_shows_broken_right_after_start(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    gone = add(store, time="03:00")
    fine = add(store, stack="prod", site="*", time="03:00")
    del agent.stacks["erp"]
    engine = make_engine(store, agent, clock, tick_seconds=3600)
    engine.start()
    try:
        assert engine.drain(5)
        status = {s["id"]: s["status"] for s in engine.status()}
    finally:
        engine.stop()
    assert status == {gone["id"]: "broken", fine["id"]: "ok"}
    agent.stacks["erp"] = ["erp.example.com"]
    engine.check_health()
    assert engine.drain(5)
    assert {s["status"] for s in engine.status()} == {"ok"}


def test_a_job_the_old_engine_started_is_followed_to_its_outcome_and_notified_once(state_dir, clock, agent, notes):
    # An upgrade leaves a run row the old engine wrote when it handed a backup to the agent.
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    job = agent.submit_backup("erp", "erp.example.com")["job"]
    store.record_run(schedule["id"], utc(2026, 11, 25, 12, 0), clock.now, job["id"], "submitted")
    engine = make_engine(store, agent, clock, notes)
    job.update(status="failed", message="bench backup exited with code 1")
    engine.poll_jobs()
    assert engine.drain(5)
    engine.poll_jobs()  # already final: nothing to ask, nothing sent again
    assert engine.drain(5)
    assert store.last_run(schedule["id"])["job_status"] == "failed"
    [(event, _, details)] = notes.sent
    assert event == "backup_failed" and details["message"] == "bench backup exited with code 1"


# ---- the page ----------------------------------------------------------------------------


def test_status_lists_the_next_three_runs_in_the_schedule_zone(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    add(store, time="02:30", timezone="Europe/Berlin", frequency="weekly", day_of_week="sun")
    engine = make_engine(store, agent, clock)
    [item] = engine.status()
    assert item["next_runs"] == ["2026-11-29T02:30:00+01:00", "2026-12-06T02:30:00+01:00", "2026-12-13T02:30:00+01:00"]
    assert item["last_run"] is None and item["status"] == "ok"


# ---- overdue alert -----------------------------------------------------------------------


def test_sites_whose_last_backup_is_older_than_twice_the_interval_are_overdue():
    now = utc(2026, 11, 25, 12)
    schedules = [
        {
            "id": "a",
            "stack": "prod",
            "site": "*",
            "frequency": "weekly",
            "enabled": True,
            "created_at": "2026-01-01T00:00:00Z",
        },
        {
            "id": "b",
            "stack": "prod",
            "site": "site1.example.com",
            "frequency": "daily",
            "enabled": True,
            "created_at": "2026-01-01T00:00:00Z",
        },
        {
            "id": "c",
            "stack": "erp",
            "site": "erp.example.com",
            "frequency": "monthly",
            "enabled": False,
            "created_at": None,
        },
        {
            "id": "d",
            "stack": "new",
            "site": "fresh.example.com",
            "frequency": "daily",
            "enabled": True,
            "created_at": "2026-11-25T00:00:00Z",
        },
    ]
    last = {
        ("prod", "site1.example.com"): now - timedelta(hours=49),  # daily wins: 49 h > 48 h
        ("prod", "site2.example.com"): "2026-11-15T12:00:00Z",  # weekly: 10 days < 14
        ("prod", "site3.example.com"): None,  # never backed up, schedule old
        ("erp", "erp.example.com"): now - timedelta(days=400),  # schedule disabled
        ("new", "fresh.example.com"): None,  # schedule only 12 h old
    }
    overdue = overdue_sites(schedules, last, now)
    assert [(o["site"], o["schedule_id"]) for o in overdue] == [("site1.example.com", "b"), ("site3.example.com", "a")]
    assert "2 days old" in overdue[0]["message"] and overdue[0]["limit_hours"] == 48


# ---- test-restore schedules ------------------------------------------------------------


def test_test_restore_schedules_do_not_count_for_overdue_backups():
    now = utc(2026, 11, 25, 12)
    proof = {
        "id": "p",
        "kind": "test_restore",
        "stack": "prod",
        "site": "*",
        "frequency": "daily",
        "enabled": True,
        "created_at": "2026-01-01T00:00:00Z",
    }
    last = {("prod", "site1.example.com"): now - timedelta(days=5)}
    assert overdue_sites([proof], last, now) == []
    assert [o["site"] for o in overdue_sites([{**proof, "kind": "backup"}], last, now)] == ["site1.example.com"]


def test_the_weekly_summary_lists_each_sites_last_proof_from_the_agent(state_dir, clock, agent):
    class Summaries(Notes):
        def __init__(self):
            super().__init__()
            self.events = ("weekly_summary",)

    stacks = {
        "stacks": [
            {
                "name": "prod",
                "sites": ["site1.example.com", "site2.example.com"],
                "last_restore_tests": {
                    "site1.example.com": {
                        "time": "2026-11-24T03:00:00Z",
                        "backup": "20261124-020000",
                        "source": "local",
                        "ok": True,
                        "message": "proven restorable",
                    },
                    "site2.example.com": None,
                },
            }
        ]
    }
    notes = Summaries()
    engine = make_engine(make_store(state_dir, clock), agent, clock, notes, restore_proofs=lambda: stacks)
    engine.send_weekly_summary()
    [(event, _, details)] = notes.sent
    assert event == "weekly_summary"
    assert details["restore_proofs"] == [
        "prod/site1.example.com: proven restorable at 2026-11-24T03:00:00Z from backup 20261124-020000 (local)",
        "prod/site2.example.com: never proven restorable (no test restore yet)",
    ]
    assert "prod/site1.example.com: proven restorable" in details["message"]

    def unreachable():
        raise ConnectionError("agent down")

    notes.sent.clear()
    make_engine(make_store(state_dir, clock), agent, clock, notes, restore_proofs=unreachable).send_weekly_summary()
    assert notes.sent[0][2]["restore_proofs"] == ["unknown: the agent could not be asked for the last test restores"]
