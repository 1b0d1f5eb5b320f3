"""The scheduler engine with injected time: due runs, DST days, catch-up, failures, restarts."""

from __future__ import annotations

import itertools
import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from fmappliance.dashboard.backup_age import overdue_sites
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.scheduler import BackupScheduler, scheduler_from_config
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
    return BackupScheduler(
        store,
        agent.submit_backup,
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


def tick(engine, clock, until, step=timedelta(minutes=1)):
    """Drive check_due minute by minute up to ``until`` (what the loop does every second)."""
    while clock.now < until:
        clock.now = min(clock.now + step, until)
        engine.check_due(clock.now)
    assert engine.drain(5)


# ---- ordinary runs -------------------------------------------------------------------


def test_due_schedule_hands_one_backup_to_the_agent_and_records_the_job(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    engine = make_engine(store, agent, clock)
    engine.reload()
    assert engine.check_due(utc(2026, 11, 25, 12, 59, 59)) == []
    assert engine.check_due(utc(2026, 11, 25, 13, 0, 0, 400000)) == [schedule["id"]]
    assert engine.drain(5)
    assert engine.check_due(utc(2026, 11, 25, 13, 0, 1)) == []  # not twice
    [job] = agent.jobs.values()
    assert (job["stack"], job["site"]) == ("erp", "erp.example.com")
    run = store.last_run(schedule["id"])
    assert (run["result"], run["job_id"], run["catch_up"], run["due"]) == (
        "submitted",
        job["id"],
        False,
        "2026-11-25T13:00:00Z",
    )


def test_every_site_schedule_backs_up_each_site_of_the_stack(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    schedule = add(store, stack="prod", site="*", time="12:30")
    engine = make_engine(store, agent, clock)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13))
    assert sorted(j["site"] for j in agent.jobs.values()) == STACKS["prod"]
    assert [r["site"] for r in store.last_runs(schedule["id"])] == STACKS["prod"]


def test_weekly_and_monthly_schedules_run_on_their_days_only(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    weekly = add(store, frequency="weekly", day_of_week="fri", time="01:00")
    monthly = add(store, stack="prod", site="site1.example.com", frequency="monthly", day_of_month=3, time="01:00")
    engine = make_engine(store, agent, clock)
    engine.reload()
    tick(engine, clock, utc(2026, 12, 31), step=timedelta(minutes=30))
    weekly_dues = [r["due"][:10] for r in store.runs(weekly["id"])]
    monthly_dues = [r["due"][:10] for r in store.runs(monthly["id"])]
    assert sorted(weekly_dues) == ["2026-11-27", "2026-12-04", "2026-12-11", "2026-12-18", "2026-12-25"]
    assert monthly_dues == ["2026-12-03"]


@pytest.mark.parametrize(
    "tz, day, at",
    [
        ("Europe/Berlin", (2026, 3, 29), "02:30"),
        ("Europe/Berlin", (2026, 10, 25), "02:30"),
        ("America/New_York", (2026, 3, 8), "02:30"),
        ("America/New_York", (2026, 11, 1), "02:30"),
        ("America/New_York", (2026, 11, 1), "01:30"),
    ],
)
def test_a_0230_schedule_runs_exactly_once_on_dst_days(state_dir, agent, tz, day, at):
    zone = ZoneInfo(tz)
    start = (datetime(*day, tzinfo=zone) - timedelta(hours=12)).astimezone(UTC)
    clock = Clock(start)
    store = make_store(state_dir, clock)
    schedule = add(store, time=at, timezone=tz)
    engine = make_engine(store, agent, clock)
    engine.reload()
    day_end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)
    tick(engine, clock, day_end - timedelta(seconds=1))
    runs = store.runs(schedule["id"])
    assert len(runs) == 1 and len(agent.jobs) == 1
    ran_at = datetime.fromisoformat(runs[0]["due"].replace("Z", "+00:00")).astimezone(zone)
    assert ran_at.date() == datetime(*day).date()
    assert runs[0]["catch_up"] is False


# ---- downtime: catch-up and missed runs ------------------------------------------------


def test_run_missed_while_down_is_caught_up_once_at_start(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="02:00")
    # The dashboard was down from before 02:00 until 05:00 the next day (3 h late, window 6 h).
    clock.now = utc(2026, 11, 26, 5, 0)
    engine = make_engine(store, agent, clock, notes, tick_seconds=3600)
    engine.start()
    try:
        assert engine.drain(5)
        runs = store.runs(schedule["id"])
        assert len(runs) == 1
        assert (runs[0]["result"], runs[0]["catch_up"], runs[0]["due"]) == ("submitted", True, "2026-11-26T02:00:00Z")
        assert engine.check_due(clock.advance(minutes=1)) == []
    finally:
        engine.stop()
    assert len(agent.jobs) == 1 and notes.sent == []


def test_run_missed_outside_the_window_is_recorded_missed_and_notified(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="02:00")
    clock.now = utc(2026, 11, 26, 9, 0)  # 7 h late, window 6 h
    engine = make_engine(store, agent, clock, notes, catchup_hours=6)
    engine.reload()
    engine.check_due(clock.now)
    assert engine.drain(5)
    assert agent.jobs == {}
    [run] = store.runs(schedule["id"])
    assert run["result"] == "missed" and "did not run" in run["message"]
    [(event, subject, details)] = notes.sent
    assert event == "backup_missed" and details["due"] == "2026-11-26T02:00:00Z"
    # The next day runs normally again.
    tick(engine, clock, utc(2026, 11, 27, 2, 1))
    assert len(agent.jobs) == 1


def test_long_downtime_catches_up_only_the_latest_and_reports_the_rest_once(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="02:00")
    clock.now = utc(2026, 11, 29, 4, 0)  # due 26th, 27th, 28th, 29th; only the 29th is in the window
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    engine.check_due(clock.now)
    assert engine.drain(5)
    results = sorted((r["result"], r["catch_up"]) for r in store.runs(schedule["id"]))
    assert results == [("missed", False), ("submitted", True)]
    assert len(agent.jobs) == 1
    [(event, _, details)] = notes.sent
    assert event == "backup_missed" and details["missed"] == 3


# ---- failures ----------------------------------------------------------------------------


def test_a_failing_submission_is_recorded_and_notified_and_other_schedules_still_run(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    failing = add(store, stack="prod", site="site1.example.com", time="13:00")
    healthy = add(store, time="13:00")
    agent.fail_stacks.add("prod")
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13, 5))
    assert store.last_run(failing["id"])["result"] == "failed"
    assert "connection refused" in store.last_run(failing["id"])["message"]
    assert store.last_run(healthy["id"])["result"] == "submitted"
    assert [n[0] for n in notes.sent] == ["backup_failed"]
    # The failing one is tried again at its next due time.
    agent.fail_stacks.clear()
    tick(engine, clock, utc(2026, 11, 26, 13, 5))
    assert store.last_run(failing["id"])["result"] == "submitted"


def test_an_exception_inside_the_due_check_does_not_stop_other_schedules(state_dir, clock, agent, monkeypatch):
    store = make_store(state_dir, clock)
    first = add(store, stack="prod", site="site1.example.com", time="13:00")
    second = add(store, time="13:00")
    engine = make_engine(store, agent, clock)
    engine.reload()
    real_record = store.record_run

    def record_run(schedule_id, *args, **kw):
        if schedule_id == first["id"]:
            raise OSError("disk full")
        return real_record(schedule_id, *args, **kw)

    monkeypatch.setattr(store, "record_run", record_run)
    assert set(engine.check_due(utc(2026, 11, 25, 13, 0, 1))) == {first["id"], second["id"]}
    assert engine.drain(5)
    assert store.last_run(second["id"])["result"] == "submitted"
    assert engine.check_due(utc(2026, 11, 25, 13, 0, 2)) == []  # no tight retry loop


def test_the_loop_thread_survives_a_raising_job_and_keeps_handing_off(state_dir, agent):
    # Real loop thread, fast ticks; the fake clock decides what is due. Waits on events only.
    clock = Clock(utc(2026, 11, 25, 12, 59, 59))
    store = make_store(state_dir, clock)
    add(store, stack="prod", site="site1.example.com", time="13:00")
    add(store, time="13:01")
    agent.fail_stacks.add("prod")
    engine = make_engine(store, agent, clock, tick_seconds=0.02)
    calls = []
    real_check = engine.check_due

    def flaky_check(now):
        calls.append(now)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real_check(now)

    engine.check_due = flaky_check
    engine.start()
    try:
        clock.now = utc(2026, 11, 25, 13, 0, 0)
        clock.now = utc(2026, 11, 25, 13, 1, 0)
        assert agent.submitted.wait(5), "the loop stopped after an exception"
    finally:
        engine.stop()
    assert [j["stack"] for j in agent.jobs.values()] == ["erp"]


def test_a_schedule_added_through_the_shared_store_is_picked_up_by_the_running_loop(state_dir, agent):
    clock = Clock(utc(2026, 11, 25, 12, 59, 59))
    store = make_store(state_dir, clock)
    engine = make_engine(store, agent, clock, tick_seconds=0.02)
    engine.start()
    try:
        add(store, time="13:00")  # no reload() call: the store's generation tells the engine
        clock.now = utc(2026, 11, 25, 13, 0, 0)
        assert agent.submitted.wait(5)
    finally:
        engine.stop()
    assert len(agent.jobs) == 1


def test_deleted_stack_or_site_marks_the_schedule_broken_without_crashing(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    gone_stack = add(store, time="13:00")
    gone_site = add(store, stack="prod", site="site2.example.com", time="13:00")
    fine = add(store, stack="prod", site="site1.example.com", time="13:00")
    del agent.stacks["erp"]
    agent.stacks["prod"].remove("site2.example.com")
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13, 5))
    status = {s["id"]: s for s in engine.status()}
    assert status[gone_stack["id"]]["status"] == "broken"
    assert "no longer exists" in status[gone_stack["id"]]["broken_reason"]
    assert status[gone_site["id"]]["status"] == "broken"
    assert "no longer on stack" in status[gone_site["id"]]["broken_reason"]
    assert status[fine["id"]]["status"] == "ok"
    assert store.last_run(gone_stack["id"])["result"] == "skipped"
    assert [j["site"] for j in agent.jobs.values()] == ["site1.example.com"]
    # The stack comes back: the next run clears the mark.
    agent.stacks["erp"] = ["erp.example.com"]
    tick(engine, clock, utc(2026, 11, 26, 13, 5))
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


def test_schedule_colliding_with_a_manual_backup_gives_one_backup(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    manual = agent.submit_backup("erp", "erp.example.com")["job"]
    manual["status"] = "running"
    engine = make_engine(store, agent, clock)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13, 1))
    assert agent.backups_of("erp", "erp.example.com") == [manual]
    run = store.last_run(schedule["id"])
    assert run["job_id"] == manual["id"] and "Joined" in run["message"]


def test_failed_job_outcome_is_recorded_and_notified_once(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13, 1))
    [job] = agent.jobs.values()
    job.update(status="failed", message="bench backup exited with code 1")
    engine.poll_jobs()
    assert engine.drain(5)
    engine.poll_jobs()  # already final: nothing to ask, nothing sent again
    assert engine.drain(5)
    assert store.last_run(schedule["id"])["job_status"] == "failed"
    [(event, _, details)] = notes.sent
    assert event == "backup_failed" and details["message"] == "bench backup exited with code 1"


# ---- restarts ----------------------------------------------------------------------------


def test_a_restart_keeps_schedules_and_last_runs_and_never_runs_a_due_time_twice(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    engine = make_engine(store, agent, clock)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13, 0, 30))
    engine.stop()
    # A new process: new store and engine on the same state dir, a little later.
    clock.advance(minutes=1)
    store2 = make_store(state_dir, clock)
    engine2 = make_engine(store2, agent, clock, tick_seconds=3600)
    engine2.start()
    try:
        assert engine2.drain(5)
        assert len(agent.jobs) == 1
        [item] = engine2.status()
        assert item["id"] == schedule["id"]
        assert item["last_run"]["result"] == "submitted"
        assert item["next_runs"][0] == "2026-11-26T13:00:00+00:00"
    finally:
        engine2.stop()


def test_a_hand_off_interrupted_by_a_crash_is_reported_failed_at_the_next_start(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    store.set_last_due(schedule["id"], utc(2026, 11, 25, 13))
    store.record_run(schedule["id"], utc(2026, 11, 25, 13), utc(2026, 11, 25, 13), None, "pending", "", False)
    clock.now = utc(2026, 11, 25, 13, 5)
    engine = make_engine(make_store(state_dir, clock), agent, clock, notes, tick_seconds=3600)
    engine.start()
    engine.stop()
    assert store.last_run(schedule["id"])["result"] == "failed"
    assert agent.jobs == {}
    assert [n[0] for n in notes.sent] == ["backup_failed"]


def test_config_schedules_run_from_first_sight_not_retroactively(state_dir, clock, agent, notes):
    config = [{"stack": "erp", "site": "*", "frequency": "daily", "time": "11:00", "timezone": "UTC", "enabled": True}]
    store = make_store(state_dir, clock, config)
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    assert engine.check_due(clock.now) == [] and notes.sent == []
    tick(engine, clock, utc(2026, 11, 26, 11, 1))
    [item] = engine.status()
    assert item["source"] == "config" and item["last_run"]["result"] == "submitted"


def test_paused_schedule_does_not_run_and_resuming_does_not_catch_up(state_dir, clock, agent, notes):
    store = make_store(state_dir, clock)
    schedule = add(store, time="13:00")
    store.set_enabled(schedule["id"], False)
    engine = make_engine(store, agent, clock, notes)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 14))
    assert agent.jobs == {}
    assert engine.status()[0]["status"] == "disabled"
    store.set_enabled(schedule["id"], True)
    engine.reload()
    assert engine.check_due(clock.now) == []
    tick(engine, clock, utc(2026, 11, 26, 13, 1))
    assert len(agent.jobs) == 1 and notes.sent == []


def test_status_lists_the_next_three_runs_in_the_schedule_zone(state_dir, clock, agent):
    store = make_store(state_dir, clock)
    add(store, time="02:30", timezone="Europe/Berlin", frequency="weekly", day_of_week="sun")
    engine = make_engine(store, agent, clock)
    [item] = engine.status()
    assert item["next_runs"] == ["2026-11-29T02:30:00+01:00", "2026-12-06T02:30:00+01:00", "2026-12-13T02:30:00+01:00"]
    assert item["last_run"] is None and item["status"] == "ok"


def test_engine_built_from_config_yaml_runs_its_declared_schedules(tmp_path, clock, agent):
    from support.config_factory import write_config

    from fmappliance.config import load_config

    path = write_config(
        tmp_path,
        stacks={"erp": {"type": "fm", "path": str(tmp_path)}},
        schedules=[{"stack": "erp", "frequency": "daily", "time": "13:00", "timezone": "Europe/Berlin"}],
        scheduler={"catchup_hours": 2},
    )
    engine = scheduler_from_config(load_config(path), agent.submit_backup, list_sites=agent.list_sites, clock=clock)
    assert engine.catchup == timedelta(hours=2)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 26, 12, 1))  # 13:00 in Berlin is 12:00 UTC
    [item] = engine.status()
    assert item["source"] == "config" and item["site"] == "*"
    assert item["last_run"]["result"] == "submitted" and len(agent.jobs) == 1


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


def test_a_due_test_restore_schedule_hands_test_restore_to_the_agent_for_each_site(state_dir, clock, agent):
    asked = []

    def submit_test_restore(stack, site):
        asked.append((stack, site))
        job = {"id": f"tr{len(asked)}", "action": "test_restore", "stack": stack, "site": site, "status": "queued"}
        agent.jobs[job["id"]] = job
        return {"success": True, "job": job, "duplicate": False}

    store = make_store(state_dir, clock)
    proof = add(store, kind="test_restore", stack="prod", site="*", time="12:30")
    backup = add(store, time="12:30")
    engine = make_engine(store, agent, clock, submit_test_restore=submit_test_restore)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13))
    assert asked == [("prod", s) for s in STACKS["prod"]]
    # The backup schedule still backs up, and only its own site.
    assert [(j["action"], j["site"]) for j in agent.jobs.values() if j["action"] == "backup_site"] == [
        ("backup_site", "erp.example.com")
    ]
    runs = store.last_runs(proof["id"])
    assert [(r["site"], r["job_id"], r["result"]) for r in runs] == [
        ("site1.example.com", "tr1", "submitted"),
        ("site2.example.com", "tr2", "submitted"),
    ]
    assert store.last_run(backup["id"])["result"] == "submitted"


def test_a_test_restore_the_agent_refuses_is_recorded_failed_and_notified_as_restore_test_failed(
    state_dir, clock, agent, notes
):
    def refuse(stack, site):
        raise RuntimeError("Site erp.example.com has no verified local backup to test.")

    store = make_store(state_dir, clock)
    schedule = add(store, kind="test_restore", time="12:30")
    engine = make_engine(store, agent, clock, notes, submit_test_restore=refuse)
    engine.reload()
    tick(engine, clock, utc(2026, 11, 25, 13))
    run = store.last_run(schedule["id"])
    assert run["result"] == "failed" and "no verified local backup" in run["message"]
    [(event, subject, details)] = notes.sent
    assert event == "restore_test_failed" and "test restore" in subject
    assert agent.jobs == {}, "a refused test restore must not fall back to a backup"


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
