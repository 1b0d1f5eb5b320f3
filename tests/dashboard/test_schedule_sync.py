"""The dashboard pushes its schedule set to the agent and notifies what the agent recorded:
versions (bumped on change, pushed again when the agent differs, above a newer agent set), the
upgrade hand-over, and failed/missed runs notified once through a cursor in the state DB, with
what happened while the dashboard was down marked so and capped with a summary line."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from support.config_factory import TEST_TOKEN

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.schedule_sync import PENDING, ScheduleSync
from fmappliance.dashboard.schedules import validate_schedule
from fmappliance.wire import format_timestamp


class Notes:
    def __init__(self):
        self.sent = []

    def __call__(self, event, subject, details, message):
        self.sent.append((event, subject, dict(details), message))


def add(store, **fields):
    base = {"stack": "prod", "site": "site1.example.com", "frequency": "daily", "time": "02:00", "timezone": "UTC"}
    clean, errors = validate_schedule({**base, **fields}, known_stacks=None, default_tz="UTC")
    assert errors == {}
    return store.add(clean, "admin")


@pytest.fixture
def store(tmp_path):
    return ScheduleStore(tmp_path / "state", default_tz="UTC")


def make_sync(store, fake_agent, notes=None, catchup_hours=6):
    return ScheduleSync(
        store,
        AgentClient(fake_agent.url, TEST_TOKEN, 5),
        catchup_hours=catchup_hours,
        notify=notes,
        clock=lambda: datetime.now(timezone.utc),
    )


def test_the_set_is_pushed_with_a_version_bumped_on_every_change(store, fake_agent):
    sync = make_sync(store, fake_agent)
    first = add(store)
    assert sync.push() and sync.state == "applied"
    assert fake_agent.schedule_set["version"] == 1
    assert [s["id"] for s in fake_agent.schedule_set["schedules"]] == [first["id"]]
    assert sync.push() and fake_agent.schedule_pushes == 1  # same set, same version: no change
    second = add(store, time="03:00")
    store.set_enabled(first["id"], False)
    assert sync.push()
    assert fake_agent.schedule_set["version"] == 2
    assert {s["id"]: s["enabled"] for s in fake_agent.schedule_set["schedules"]} == {
        first["id"]: False,
        second["id"]: True,
    }
    # A new ScheduleSync on the same database (a restart) keeps the version.
    assert make_sync(store, fake_agent).version() == 2


def test_the_set_is_pushed_again_when_the_agents_version_differs(store, fake_agent):
    sync = make_sync(store, fake_agent)
    add(store)
    sync.push()
    fake_agent.schedule_set = None  # the agent lost its file (a reinstall)
    sync.sync()
    assert fake_agent.schedule_set["version"] == 1 and fake_agent.schedule_pushes == 2


def test_an_agent_holding_a_newer_set_gets_ours_above_it(store, fake_agent):
    sync = make_sync(store, fake_agent)
    add(store)
    fake_agent.schedule_set = {"version": 5, "received": None, "catchup_hours": 6, "schedules": []}
    assert sync.push()
    assert fake_agent.schedule_set["version"] == 6 and len(fake_agent.schedule_set["schedules"]) == 1
    assert sync.version() == 6


def test_the_first_push_hands_over_the_old_engines_last_due_times_once(store, fake_agent):
    schedule = add(store)
    handled = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)
    store.set_last_due(schedule["id"], handled)
    sync = make_sync(store, fake_agent)
    sync.push()
    [put] = [b for m, p, b in fake_agent.requests if m == "PUT"]
    assert put["schedules"][0]["handled_through"] == format_timestamp(handled)
    add(store, time="04:00")
    sync.push()
    later = [b for m, p, b in fake_agent.requests if m == "PUT"][-1]
    assert all("handled_through" not in e for e in later["schedules"])


def test_an_unreachable_agent_leaves_the_push_pending(store, fake_agent):
    sync = make_sync(store, fake_agent)
    add(store)
    fake_agent.fail_status = 502
    assert sync.push() is False and sync.state == PENDING
    assert sync.view(fresh=True) is None
    fake_agent.fail_status = None
    sync.sync()
    assert sync.state == "applied" and fake_agent.schedule_set["version"] == 1


def test_failures_while_the_dashboard_was_down_are_notified_once_marked_so(store, fake_agent):
    earlier = format_timestamp(datetime.now(timezone.utc) - timedelta(hours=1))
    fake_agent.add_schedule_record("s1", "succeeded", at=earlier, job="0000000000000001")
    fake_agent.add_schedule_record("s1", "failed", at=earlier, job="0000000000000002", message="bench failed")
    fake_agent.add_schedule_record("s2", "missed", at=earlier, missed=3, message="did not run")
    fake_agent.add_schedule_record("s3", "failed", at=earlier, kind="test_restore", job="0000000000000003")
    time.sleep(1.1)  # the dashboard starts after those (timestamps have whole seconds)
    notes = Notes()
    sync = make_sync(store, fake_agent, notes)
    assert sync.watch() == 3
    events = [(event, details["schedule_id"], details["while_dashboard_down"]) for event, _, details, _ in notes.sent]
    assert events == [("backup_failed", "s1", True), ("backup_missed", "s2", True), ("restore_test_failed", "s3", True)]
    assert notes.sent[0][1] == "Scheduled backup of site1.example.com on prod failed (while the dashboard was down)"
    assert notes.sent[0][3] == "bench failed" and notes.sent[1][2]["missed"] == 3

    # Never twice: not by this watcher, not after a restart (the cursor is in the state DB).
    assert sync.watch() == 0
    assert make_sync(store, fake_agent, notes).watch() == 0
    assert len(notes.sent) == 3

    # While the dashboard runs: notified unmarked; a failed test-restore job is the job watcher's.
    fake_agent.add_schedule_record("s1", "failed", job="0000000000000004", message="disk full")
    fake_agent.add_schedule_record("s3", "failed", kind="test_restore", job="0000000000000005")
    fake_agent.add_schedule_record("s3", "failed", kind="test_restore", message="no verified backup to test")
    assert sync.watch() == 2
    assert [(e, d["schedule_id"], d["while_dashboard_down"]) for e, _, d, _ in notes.sent[3:]] == [
        ("backup_failed", "s1", False),
        ("restore_test_failed", "s3", False),
    ]


def test_a_long_outage_is_capped_with_a_summary_line_and_nothing_is_dropped_silently(store, fake_agent):
    now = datetime.now(timezone.utc)
    for _ in range(5):
        fake_agent.add_schedule_record("old", "failed", at=format_timestamp(now - timedelta(days=8)))
    for i in range(250):
        fake_agent.add_schedule_record(f"s{i}", "failed", at=format_timestamp(now - timedelta(hours=1)))
    time.sleep(1.1)
    notes = Notes()
    assert make_sync(store, fake_agent, notes).watch() == 201
    summary, *one_by_one = notes.sent
    assert summary[1] == "55 more failed or missed scheduled run(s) while the dashboard was down"
    assert "are not listed one by one" in summary[3]
    assert len(one_by_one) == 200 and one_by_one[-1][2]["schedule_id"] == "s249"


def test_an_agent_whose_history_started_over_is_read_from_the_start(store, fake_agent):
    notes = Notes()
    sync = make_sync(store, fake_agent, notes)
    fake_agent.add_schedule_record("s1", "failed")
    fake_agent.add_schedule_record("s1", "failed")
    assert sync.watch() == 2
    fake_agent.schedule_history = []  # a new agent state dir
    fake_agent.add_schedule_record("s1", "missed")
    assert sync.watch() == 1 and notes.sent[-1][0] == "backup_missed"
