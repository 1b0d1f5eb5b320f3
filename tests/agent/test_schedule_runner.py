"""The agent's schedule runner in-process: the pushed set, due times, catch-up/missed, outcomes.

A fake clock and a recording ``start_job`` stand in for time and the job manager; the real
agent process is exercised in test_schedule_runner_process.py.
"""

from __future__ import annotations

import json
import os
import stat
from datetime import datetime, timedelta, timezone

import pytest

from fmappliance.agent.schedules import FILE_NAME, PushRejected, ScheduleFileError, ScheduleRunner
from fmappliance.wire import format_timestamp


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class Refused(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class FakeAgent:
    """start_job/list_sites/get_job as the agent's Actions/Inventory/JobManager answer them."""

    def __init__(self, stacks=None):
        self.stacks = stacks if stacks is not None else {"prod": ["a.example.com", "b.example.com"]}
        self.started: list[tuple] = []
        self.jobs: dict[str, dict] = {}
        self.refuse: str | None = None

    def start_job(self, action, stack, site, options):
        if self.refuse:
            raise Refused(404, self.refuse)
        job = {
            "id": f"{len(self.started) + 1:016x}",
            "action": action,
            "stack": stack,
            "site": site,
            "status": "queued",
        }
        self.started.append((action, stack, site, options))
        self.jobs[job["id"]] = job
        return job, True, "started"

    def list_sites(self, stack):
        if stack not in self.stacks:
            raise Refused(404, f"There is no stack named {stack!r} in the agent's config.")
        return self.stacks[stack]

    def get_job(self, job_id):
        return self.jobs.get(job_id)

    def finish(self, runner, job_id, status="succeeded", message=""):
        self.jobs[job_id].update(status=status, message=message)
        runner.job_ended(self.jobs[job_id])


def entry(**kw) -> dict:
    base = {
        "id": "s1",
        "kind": "backup",
        "stack": "prod",
        "site": "a.example.com",
        "frequency": "daily",
        "time": "02:00",
        "day_of_week": None,
        "day_of_month": None,
        "timezone": "UTC",
        "enabled": True,
    }
    return {**base, **kw}


def push_body(version=1, schedules=None, catchup_hours=6) -> dict:
    return {
        "version": version,
        "catchup_hours": catchup_hours,
        "schedules": [entry()] if schedules is None else schedules,
    }


@pytest.fixture
def clock():
    return Clock(utc(2026, 3, 10, 1, 0))


@pytest.fixture
def agent():
    return FakeAgent()


def make_runner(tmp_path, agent, clock) -> ScheduleRunner:
    return ScheduleRunner(
        str(tmp_path), start_job=agent.start_job, list_sites=agent.list_sites, get_job=agent.get_job, clock=clock
    )


def item(runner, schedule_id="s1") -> dict:
    return next(s for s in runner.view()["schedules"] if s["id"] == schedule_id)


def test_a_due_backup_schedule_starts_one_scheduled_backup_and_records_its_outcome(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    assert runner.push(push_body()) == (1, True)
    assert item(runner)["next_due"] == "2026-03-10T02:00:00Z"
    clock.advance(minutes=59, seconds=59)
    assert runner.check_due() == []
    clock.advance(seconds=1)
    assert runner.check_due() == ["s1"]
    assert agent.started == [("backup_site", "prod", "a.example.com", {"label": "scheduled"})]
    assert runner.check_due() == []  # the same due time is handled once
    shown = item(runner)
    assert shown["last_handled"]["status"] == "running" and shown["last_handled"]["due"] == "2026-03-10T02:00:00Z"
    assert shown["next_due"] == "2026-03-11T02:00:00Z" and shown["lateness_seconds"] == 0

    agent.finish(runner, shown["last_handled"]["job"])
    assert item(runner)["last_handled"]["status"] == "succeeded"
    record = runner.history()["runs"][-1]
    assert record["status"] == "succeeded" and record["job"] == shown["last_handled"]["job"]
    assert record["due"] == "2026-03-10T02:00:00Z"


def test_a_test_restore_schedule_starts_test_restore_for_every_site(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(kind="test_restore", site="*")]))
    runner.check_due(clock.advance(hours=1))
    # No backup id: the agent proves the newest verified backup.
    assert agent.started == [
        ("test_restore", "prod", "a.example.com", {}),
        ("test_restore", "prod", "b.example.com", {}),
    ]
    handled = item(runner)["last_handled"]
    agent.finish(runner, handled["jobs"][0])
    assert item(runner)["last_handled"]["status"] == "running"
    agent.finish(runner, handled["jobs"][1], "failed", "The throwaway site did not answer.")
    assert item(runner)["last_handled"]["status"] == "failed"
    assert runner.history()["runs"][-1]["message"] == "The throwaway site did not answer."


def test_after_downtime_the_latest_due_time_is_caught_up_and_older_ones_recorded_missed(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body())
    runner.stop()
    # The agent is down from 01:00 on day 1 until 05:00 on day 3: due times 02:00 day 1, 2, 3.
    clock.now = utc(2026, 3, 12, 5, 0)
    runner = make_runner(tmp_path, agent, clock)
    assert runner.check_due() == ["s1"]
    assert len(agent.started) == 1
    shown = item(runner)
    assert shown["last_handled"]["status"] == "catch-up" and shown["last_handled"]["due"] == "2026-03-12T02:00:00Z"
    assert shown["missed_total"] == 2 and shown["lateness_seconds"] == 3 * 3600
    missed = [r for r in runner.history()["runs"] if r["status"] == "missed"]
    assert len(missed) == 1 and missed[0]["missed"] == 2
    assert (
        "did not run because the agent was not running; only the most recent missed run is made up"
        in (missed[0]["message"])
    )


def test_a_due_time_older_than_catchup_hours_is_missed_not_run(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(catchup_hours=2))
    clock.now = utc(2026, 3, 10, 4, 30)
    assert runner.check_due() == []
    assert agent.started == []
    shown = item(runner)
    assert shown["last_handled"]["status"] == "missed" and shown["missed_total"] == 1
    assert "runs more than 2 h late are not made up" in shown["last_handled"]["message"]
    assert shown["next_due"] == "2026-03-11T02:00:00Z"


def test_a_due_time_is_handled_once_across_a_restart(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body())
    runner.check_due(clock.advance(hours=1))
    assert len(agent.started) == 1
    again = make_runner(tmp_path, agent, clock)
    assert again.check_due(clock.advance(seconds=30)) == []
    assert len(agent.started) == 1


def test_the_runner_thread_starts_a_due_schedule_without_being_asked(tmp_path, agent):
    now = datetime.now(timezone.utc)
    runner = make_runner(tmp_path, agent, None)
    # A fake clock that runs: real time shifted so the due minute comes in about a second.
    due = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    offset = due - now - timedelta(seconds=1)
    runner._clock = lambda: datetime.now(timezone.utc) + offset
    runner.push(push_body(schedules=[entry(time=due.strftime("%H:%M"))]))
    runner.start()
    try:
        deadline = datetime.now(timezone.utc) + timedelta(seconds=5)
        while not agent.started and datetime.now(timezone.utc) < deadline:
            import time

            time.sleep(0.05)
        assert agent.started, "the runner did not start the due backup"
    finally:
        runner.stop()


def test_a_schedule_whose_stack_is_gone_is_recorded_failed_with_a_sentence(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(stack="gone"), entry(id="s2", site="c.example.com")]))
    runner.check_due(clock.advance(hours=1))
    assert agent.started == []
    gone = item(runner)["last_handled"]
    assert gone["status"] == "failed"
    assert gone["message"] == "Stack 'gone' no longer exists; remove this schedule or restore the stack."
    site_gone = item(runner, "s2")["last_handled"]
    assert site_gone["message"] == (
        "Site 'c.example.com' is no longer on stack 'prod'; remove this schedule or restore the site."
    )
    assert [r["status"] for r in runner.history()["runs"]] == ["failed", "failed"]
    assert [s["id"] for s in runner.view()["schedules"]] == ["s1", "s2"]  # kept, not dropped


def test_a_test_restore_with_no_verified_backup_is_recorded_failed_with_the_agents_sentence(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(kind="test_restore")]))
    agent.refuse = "a.example.com on prod has no verified backup to test yet; back it up first."
    runner.check_due(clock.advance(hours=1))
    handled = item(runner)["last_handled"]
    assert handled["status"] == "failed" and "has no verified backup to test yet" in handled["message"]


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"time": "25:00"}, "time"),
        ({"frequency": "hourly"}, "frequency"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"kind": "restore"}, "kind"),
        ({"stack": "bad name!"}, "stack"),
        ({"frequency": "weekly", "day_of_week": "someday"}, "day_of_week"),
        ({"frequency": "monthly", "day_of_month": 31}, "day_of_month"),
        ({"enabled": "yes"}, "enabled"),
        ({"handled_through": "yesterday"}, "handled_through"),
        ({"colour": "blue"}, "colour"),
        ({"id": ""}, "id"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_entry_and_field_and_nothing_is_applied(tmp_path, agent, clock, bad, field):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body())
    before = (tmp_path / FILE_NAME).read_bytes()
    with pytest.raises(PushRejected) as caught:
        runner.push(push_body(version=2, schedules=[entry(id="ok"), entry(**{"id": "s2", **bad})]))
    assert caught.value.status == 400
    assert caught.value.details == {"entry": 1, "field": field}
    assert caught.value.message.startswith("schedules[1]") and f": {field}: " in caught.value.message
    assert (tmp_path / FILE_NAME).read_bytes() == before
    assert runner.version == 1 and [s["id"] for s in runner.view()["schedules"]] == ["s1"]


def test_duplicate_ids_and_bad_versions_are_refused(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    with pytest.raises(PushRejected, match=r'schedules\[1\] \(id "s1"\): id: this id appears twice'):
        runner.push(push_body(schedules=[entry(), entry()]))
    with pytest.raises(PushRejected, match="version"):
        runner.push({"version": "3", "catchup_hours": 6, "schedules": []})
    with pytest.raises(PushRejected, match="catchup_hours"):
        runner.push({"version": 3, "catchup_hours": -1, "schedules": []})
    assert runner.version is None


def test_an_older_version_is_refused_with_409_and_the_same_version_is_a_no_op(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(version=12))
    with pytest.raises(PushRejected) as caught:
        runner.push(push_body(version=11, schedules=[]))
    assert (caught.value.status, caught.value.message) == (409, "schedule version 11 is older than the applied 12")
    assert runner.push(push_body(version=12, schedules=[])) == (12, False)
    assert [s["id"] for s in runner.view()["schedules"]] == ["s1"]


def test_handled_through_marks_earlier_due_times_handled_so_the_hand_over_runs_nothing_twice(tmp_path, agent, clock):
    clock.now = utc(2026, 3, 10, 3, 0)
    runner = make_runner(tmp_path, agent, clock)
    # The old engine handled 02:00 today; the 02:00 of the day before that was handled too.
    runner.push(
        push_body(
            schedules=[
                entry(handled_through="2026-03-10T02:00:00Z"),
                entry(id="s2", handled_through="2026-03-09T02:00:00Z"),
            ]
        )
    )
    assert runner.check_due() == ["s2"]  # s2's 02:00 today was not handled: caught up, not skipped
    assert [(a, site) for a, _, site, _ in agent.started] == [("backup_site", "a.example.com")]
    assert item(runner)["next_due"] == "2026-03-11T02:00:00Z"
    assert item(runner, "s2")["last_handled"]["status"] == "catch-up"


def test_a_new_schedule_does_not_run_due_times_before_it_was_pushed(tmp_path, agent, clock):
    clock.now = utc(2026, 3, 10, 3, 0)
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body())
    assert runner.check_due() == [] and agent.started == []
    assert item(runner)["missed_total"] == 0


def test_a_disabled_schedule_does_not_run_and_resuming_does_not_catch_up(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(enabled=False)]))
    assert item(runner)["next_due"] is None
    runner.check_due(clock.advance(hours=3))
    runner.push(push_body(version=2))
    assert runner.check_due() == [] and agent.started == []
    assert item(runner)["next_due"] == "2026-03-11T02:00:00Z"


def test_the_file_is_private_and_survives_a_restart(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(version=7))
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    again = make_runner(tmp_path, agent, clock)
    assert again.version == 7 and again.view()["received"] == format_timestamp(clock.now)


@pytest.mark.parametrize("content", [b"{not json", b'{"format": 99}', b"[]"])
def test_an_unreadable_file_is_an_error_never_an_empty_set(tmp_path, agent, clock, content):
    (tmp_path / FILE_NAME).write_bytes(content)
    with pytest.raises(ScheduleFileError, match=FILE_NAME):
        make_runner(tmp_path, agent, clock)


def test_the_metrics_carry_lateness_and_missed_per_schedule(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(catchup_hours=1))
    runner.check_due(utc(2026, 3, 10, 4, 0))
    clock.now = utc(2026, 3, 10, 4, 0)
    from fmappliance.prometheus_text import render

    text = render(runner.families())
    labels = 'schedule="s1",stack="prod",site="a.example.com"'
    assert f"fmappliance_schedule_missed_total{{{labels}}} 1" in text
    assert f"fmappliance_schedule_lateness_seconds{{{labels}}} 7200" in text


def test_history_is_read_with_a_cursor(tmp_path, agent, clock):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(stack="gone")]))
    runner.check_due(clock.advance(days=1))
    runner.check_due(clock.advance(days=1))
    first = runner.history()
    assert [r["seq"] for r in first["runs"]] == [1, 2]
    assert runner.history(after=1)["runs"][0]["seq"] == 2
    assert runner.history(after=2)["runs"] == [] and first["next_seq"] == 3
    json.dumps(first)


def tick(runner, clock, until, step=timedelta(minutes=1)):
    """Drive check_due minute by minute up to ``until`` (what the loop does at each due time)."""
    while clock.now < until:
        clock.now = min(clock.now + step, until)
        runner.check_due()


def test_weekly_and_monthly_schedules_run_on_their_days_only(tmp_path, agent, clock):
    clock.now = utc(2026, 11, 25, 12, 0)
    runner = make_runner(tmp_path, agent, clock)
    schedules = [
        entry(id="weekly", frequency="weekly", day_of_week="fri", time="01:00"),
        entry(id="monthly", site="b.example.com", frequency="monthly", day_of_month=3, time="01:00"),
    ]
    runner.push(push_body(schedules=schedules))
    dues = {"weekly": [], "monthly": []}
    while clock.now < utc(2026, 12, 31):
        clock.advance(minutes=30)
        for schedule_id in runner.check_due():
            dues[schedule_id].append(item(runner, schedule_id)["last_handled"]["due"][:10])
    assert dues["weekly"] == ["2026-11-27", "2026-12-04", "2026-12-11", "2026-12-18", "2026-12-25"]
    assert dues["monthly"] == ["2026-12-03"]


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
def test_a_schedule_in_the_dst_hour_runs_exactly_once_on_time(tmp_path, agent, tz, day, at):
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    clock = Clock((datetime(*day, tzinfo=zone) - timedelta(hours=12)).astimezone(timezone.utc))
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(time=at, timezone=tz)]))
    tick(
        runner, clock, (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(timezone.utc) - timedelta(seconds=1)
    )
    assert len(agent.started) == 1
    handled = item(runner)["last_handled"]
    ran_at = datetime.fromisoformat(handled["due"].replace("Z", "+00:00")).astimezone(zone)
    assert ran_at.date() == datetime(*day).date() and handled["catch_up"] is False


def test_an_error_handling_one_schedule_does_not_stop_the_others(tmp_path, agent, clock, monkeypatch):
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(id="bad"), entry(id="good", site="b.example.com")]))
    real = runner._handle_due

    def flaky(schedule, now, catchup):
        if schedule["id"] == "bad":
            raise RuntimeError("boom")
        return real(schedule, now, catchup)

    monkeypatch.setattr(runner, "_handle_due", flaky)
    assert runner.check_due(clock.advance(hours=1)) == ["good"]
    assert [site for _, _, site, _ in agent.started] == ["b.example.com"]
    # The failing schedule is not retried in a tight loop: its next due time moved on.
    assert item(runner, "bad")["next_due"] == "2026-03-11T02:00:00Z"


def test_jobs_that_end_before_they_are_recorded_still_settle_the_run(tmp_path, agent, clock):
    real_start = agent.start_job

    def instant(action, stack, site, options):
        job, created, message = real_start(action, stack, site, options)
        job["status"] = "succeeded"  # ended (and its on_finish came) before the runner recorded it
        return job, created, message

    agent.start_job = instant
    runner = make_runner(tmp_path, agent, clock)
    runner.push(push_body(schedules=[entry(site="*")]))
    runner.check_due(clock.advance(hours=1))
    handled = item(runner)["last_handled"]
    assert handled["status"] == "succeeded" and len(handled["jobs"]) == 2
    assert [r["status"] for r in runner.history()["runs"]] == ["succeeded", "succeeded"]
