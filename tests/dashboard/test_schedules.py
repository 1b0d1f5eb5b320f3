"""Schedules: add-form validation, next-run arithmetic (DST included) and the SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from fmappliance.dashboard.schedule_calendar import next_runs, runs_between, server_timezone
from fmappliance.dashboard.schedule_store import ScheduleStore, config_schedule_id
from fmappliance.dashboard.schedules import ScheduleError, validate_schedule

UTC = timezone.utc
STACKS = {"prod": ["site1.example.com", "site2.example.com"], "erp": ["erp.example.com"]}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(tz: str, *args) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(tz))


def sched(frequency="daily", time="02:00", tz="UTC", **extra) -> dict:
    return {"frequency": frequency, "time": time, "timezone": tz, **extra}


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ---- validation ----------------------------------------------------------------------


def valid_fields(**overrides) -> dict:
    fields = {"stack": "prod", "site": "site1.example.com", "frequency": "daily", "time": "02:30"}
    fields.update(overrides)
    return fields


def test_valid_daily_form_is_cleaned_with_the_default_zone():
    clean, errors = validate_schedule(valid_fields(csrf_token="x"), known_stacks=STACKS, default_tz="Europe/Berlin")
    assert errors == {}
    assert clean == {
        "kind": "backup",
        "stack": "prod",
        "site": "site1.example.com",
        "frequency": "daily",
        "time": "02:30",
        "day_of_week": None,
        "day_of_month": None,
        "timezone": "Europe/Berlin",
        "enabled": True,
    }


def test_site_omitted_or_star_means_every_site():
    for site in (None, "", "*"):
        clean, errors = validate_schedule(valid_fields(site=site), known_stacks=STACKS, default_tz="UTC")
        assert errors == {} and clean["site"] == "*"


def test_weekly_and_monthly_keep_only_their_day_field():
    clean, _ = validate_schedule(
        valid_fields(frequency="weekly", day_of_week="Fri", day_of_month="3"), known_stacks=STACKS, default_tz="UTC"
    )
    assert (clean["day_of_week"], clean["day_of_month"]) == ("fri", None)
    clean, _ = validate_schedule(
        valid_fields(frequency="monthly", day_of_month=28, day_of_week="mon", timezone="America/New_York"),
        known_stacks=STACKS,
        default_tz="UTC",
    )
    assert (clean["day_of_week"], clean["day_of_month"], clean["timezone"]) == (None, 28, "America/New_York")


@pytest.mark.parametrize(
    "fields, field, words",
    [
        ({"time": "25:00"}, "time", "HH:MM"),
        ({"time": "2:30"}, "time", "HH:MM"),
        ({"frequency": "monthly", "day_of_month": "31"}, "day_of_month", "1 to 28"),
        ({"frequency": "monthly", "day_of_month": "0"}, "day_of_month", "1 to 28"),
        ({"frequency": "monthly"}, "day_of_month", "1 to 28"),
        ({"frequency": "weekly", "day_of_week": "someday"}, "day_of_week", "mon"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "IANA"),
        ({"timezone": "../../etc/passwd"}, "timezone", "IANA"),
        ({"timezone": "localtime"}, "timezone", "IANA"),
        ({"stack": "staging"}, "stack", "known stacks: erp, prod"),
        ({"stack": "bad name!"}, "stack", "letters, digits"),
        ({"stack": ""}, "stack", "Pick the stack"),
        ({"site": "nosuch.example.com"}, "site", "has no site"),
        ({"site": "bad/site"}, "site", "host name"),
        ({"frequency": "hourly"}, "frequency", "daily, weekly or monthly"),
    ],
)
def test_each_invalid_field_gets_its_own_operator_message(fields, field, words):
    clean, errors = validate_schedule(valid_fields(**fields), known_stacks=STACKS, default_tz="UTC")
    assert clean is None
    assert set(errors) == {field}
    assert words in errors[field]


def test_several_invalid_fields_are_all_reported_at_once():
    clean, errors = validate_schedule(
        {"stack": "nope", "frequency": "monthly", "time": "24:00", "day_of_month": "31", "timezone": "Nowhere/City"},
        known_stacks=STACKS,
        default_tz="UTC",
    )
    assert clean is None
    assert set(errors) == {"stack", "time", "day_of_month", "timezone"}


def test_without_an_inventory_any_well_formed_stack_and_site_pass():
    clean, errors = validate_schedule(
        valid_fields(stack="later", site="x.example.com"), known_stacks=None, default_tz="UTC"
    )
    assert errors == {} and clean["stack"] == "later"


def test_server_timezone_is_an_iana_name(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    assert server_timezone() == "America/New_York"
    monkeypatch.setenv("TZ", "Not/AZone")
    assert validate_schedule(valid_fields(), known_stacks=None, default_tz=server_timezone())[1] == {}


# ---- next-run arithmetic -------------------------------------------------------------


def test_daily_runs_come_every_day_at_the_wall_time():
    runs = next_runs(sched(time="02:00", tz="Europe/Berlin"), utc(2026, 11, 25, 12, 0))
    assert runs == [local("Europe/Berlin", 2026, 11, d, 2, 0) for d in (26, 27, 28)]
    assert all(str(r.tzinfo) == "Europe/Berlin" for r in runs)


def test_next_runs_are_strictly_after_the_given_instant():
    s = sched(time="02:00")
    assert next_runs(s, utc(2026, 11, 25, 2, 0), 1) == [utc(2026, 11, 26, 2, 0)]
    assert next_runs(s, utc(2026, 11, 25, 1, 59, 59), 1) == [utc(2026, 11, 25, 2, 0)]


def test_weekly_runs_fall_on_the_chosen_weekday():
    runs = next_runs(sched("weekly", "23:15", "America/New_York", day_of_week="mon"), utc(2026, 11, 25))
    assert [r.date().isoformat() for r in runs] == ["2026-11-30", "2026-12-07", "2026-12-14"]
    assert all(r.weekday() == 0 and (r.hour, r.minute) == (23, 15) for r in runs)


def test_monthly_runs_skip_nothing_across_february_and_year_end():
    runs = next_runs(sched("monthly", "04:00", "Europe/Berlin", day_of_month=28), utc(2026, 12, 28, 4, 0), 4)
    assert [r.date().isoformat() for r in runs] == ["2027-01-28", "2027-02-28", "2027-03-28", "2027-04-28"]


def test_weekly_run_uses_the_local_date_not_the_utc_date():
    # Sunday 00:30 in Tokyo is Saturday 15:30 UTC.
    runs = next_runs(sched("weekly", "00:30", "Asia/Tokyo", day_of_week="sun"), utc(2026, 11, 25), 1)
    assert runs[0].astimezone(UTC) == utc(2026, 11, 28, 15, 30)


DST_DAYS = [
    # zone, day, wall time, expected run (local), expected UTC offset in hours
    ("Europe/Berlin", (2026, 3, 29), "02:30", (3, 0), 2),  # spring forward: 02:30 doesn't exist
    ("Europe/Berlin", (2026, 10, 25), "02:30", (2, 30), 2),  # fall back: 02:30 happens twice, first one
    ("America/New_York", (2026, 3, 8), "02:30", (3, 0), -4),  # spring forward
    ("America/New_York", (2026, 11, 1), "02:30", (2, 30), -5),
    ("America/New_York", (2026, 11, 1), "01:30", (1, 30), -4),  # 01:30 happens twice there, first one
]


@pytest.mark.parametrize("tz, day, at, expected, offset", DST_DAYS)
def test_a_schedule_runs_exactly_once_on_dst_transition_days(tz, day, at, expected, offset):
    zone = ZoneInfo(tz)
    start = datetime(*day, tzinfo=zone).astimezone(UTC)
    end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC)
    runs = runs_between(sched(time=at, tz=tz), start - timedelta(seconds=1), end - timedelta(seconds=1))
    assert len(runs) == 1
    run = runs[0]
    assert (run.hour, run.minute) == expected
    assert run.utcoffset() == timedelta(hours=offset)
    # The days around it keep their normal time.
    around = runs_between(sched(time=at, tz=tz), start - timedelta(days=1), end + timedelta(days=1))
    assert len(around) == 3
    assert [(r.hour, r.minute) for r in (around[0], around[2])] == [tuple(map(int, at.split(":")))] * 2


def test_next_runs_from_a_local_time_in_the_repeated_hour_are_correct():
    # After the first 02:30 of the Berlin fall-back day, the next run is the next day.
    first = datetime(2026, 10, 25, 2, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert next_runs(sched(time="02:30", tz="Europe/Berlin"), first, 1)[0].day == 26


# ---- store ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return ScheduleStore(tmp_path / "state", default_tz="Europe/Berlin", clock=Clock(utc(2026, 11, 25, 12)))


def add_daily(store, **overrides) -> dict:
    clean, errors = validate_schedule(valid_fields(**overrides), known_stacks=STACKS, default_tz=store.default_tz)
    assert errors == {}
    return store.add(clean, "admin")


def test_added_schedule_is_listed_with_id_creator_and_time(store):
    schedule = add_daily(store)
    assert store.list() == [schedule]
    assert schedule["source"] == "ui" and schedule["created_by"] == "admin"
    assert schedule["created_at"] == "2026-11-25T12:00:00Z"
    assert schedule["timezone"] == "Europe/Berlin" and schedule["enabled"] is True
    assert store.last_due(schedule["id"]) == utc(2026, 11, 25, 12)


def test_definitions_runs_and_state_survive_a_new_store(tmp_path, store):
    schedule = add_daily(store)
    store.set_enabled(schedule["id"], False)
    store.set_last_due(schedule["id"], utc(2026, 11, 26, 1, 30))
    store.record_run(
        schedule["id"],
        utc(2026, 11, 26, 1, 30),
        utc(2026, 11, 26, 1, 30, 1),
        "job1",
        "submitted",
        "Handed to the agent.",
        True,
        job_status="queued",
    )
    reopened = ScheduleStore(tmp_path / "state", default_tz="UTC")
    assert [s["id"] for s in reopened.list()] == [schedule["id"]]
    assert reopened.list()[0]["enabled"] is False
    assert reopened.last_due(schedule["id"]) == utc(2026, 11, 26, 1, 30)
    run = reopened.last_run(schedule["id"])
    assert (run["job_id"], run["result"], run["catch_up"], run["job_status"]) == ("job1", "submitted", True, "queued")
    assert reopened.update_run_result("job1", "succeeded")[0]["job_status"] == "succeeded"
    assert reopened.update_run_result("job1", "succeeded") == []  # no change the second time
    assert (tmp_path / "state" / "schedules.sqlite3").exists()


def test_remove_deletes_a_ui_schedule_and_reports_unknown_ids(store):
    schedule = add_daily(store)
    assert store.remove(schedule["id"]) is True
    assert store.list() == []
    assert store.remove(schedule["id"]) is False
    assert store.set_enabled("nope", True) is False


CONFIG = [
    {
        "stack": "prod",
        "site": "*",
        "frequency": "daily",
        "time": "02:00",
        "day_of_week": "sun",
        "day_of_month": 1,
        "timezone": "",
        "enabled": True,
    },
    {
        "stack": "erp",
        "site": "erp.example.com",
        "frequency": "weekly",
        "time": "03:00",
        "day_of_week": "sat",
        "day_of_month": 1,
        "timezone": "America/New_York",
        "enabled": False,
    },
]


def test_config_schedules_are_merged_marked_and_cannot_be_removed_or_toggled(tmp_path):
    store = ScheduleStore(tmp_path, config_schedules=CONFIG, default_tz="Europe/Berlin")
    listed = store.list()
    assert [s["source"] for s in listed] == ["config", "config"]
    daily, weekly = listed
    assert daily["id"].startswith("cfg-1-") and daily["timezone"] == "Europe/Berlin"
    assert (daily["day_of_week"], daily["day_of_month"]) == (None, None)
    assert (weekly["day_of_week"], weekly["enabled"]) == ("sat", False)
    with pytest.raises(ScheduleError, match="config.yaml"):
        store.remove(daily["id"])
    with pytest.raises(ScheduleError, match="config.yaml"):
        store.set_enabled(daily["id"], False)
    assert len(store.list()) == 2


def test_config_schedule_ids_are_stable_across_reordering_and_duplicates_differ(tmp_path):
    first = [s["id"] for s in ScheduleStore(tmp_path, config_schedules=CONFIG, default_tz="UTC").list()]
    reordered = [s["id"] for s in ScheduleStore(tmp_path, config_schedules=CONFIG[::-1], default_tz="UTC").list()]
    assert sorted(first) == sorted(reordered)
    doubled = [
        s["id"] for s in ScheduleStore(tmp_path, config_schedules=[CONFIG[0], CONFIG[0]], default_tz="UTC").list()
    ]
    assert doubled[0] != doubled[1] and doubled[0] == config_schedule_id(CONFIG[0], 1)


def test_config_schedule_with_unknown_zone_is_listed_as_broken(tmp_path):
    bad = dict(CONFIG[0], timezone="Mars/Base")
    [schedule] = ScheduleStore(tmp_path, config_schedules=[bad], default_tz="UTC").list()
    assert "Unknown time zone" in schedule["broken_reason"]


# ---- kinds ---------------------------------------------------------------------------


def test_kind_defaults_to_backup_and_accepts_test_restore():
    clean, errors = validate_schedule(valid_fields(), known_stacks=STACKS, default_tz="UTC")
    assert errors == {} and clean["kind"] == "backup"
    clean, errors = validate_schedule(valid_fields(kind="test_restore"), known_stacks=STACKS, default_tz="UTC")
    assert errors == {} and clean["kind"] == "test_restore"


def test_an_unknown_kind_is_refused_on_its_own_field():
    clean, errors = validate_schedule(valid_fields(kind="restore"), known_stacks=STACKS, default_tz="UTC")
    assert clean is None
    assert set(errors) == {"kind"}
    assert "backup or test_restore" in errors["kind"]


def test_kind_is_stored_and_old_stores_are_migrated_to_backup(tmp_path):
    import sqlite3

    # A store from before schedules had a kind: the table has no kind column.
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "schedules.sqlite3")
    db.execute(
        "CREATE TABLE schedules (id TEXT PRIMARY KEY, stack TEXT NOT NULL, site TEXT NOT NULL, frequency TEXT NOT NULL,"
        " time TEXT NOT NULL, day_of_week TEXT, day_of_month INTEGER, timezone TEXT NOT NULL,"
        " enabled INTEGER NOT NULL DEFAULT 1, created_by TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    db.execute(
        "INSERT INTO schedules VALUES ('old1', 'prod', '*', 'daily', '02:00', NULL, NULL, 'UTC', 1, 'admin',"
        " '2026-01-01T00:00:00Z')"
    )
    db.commit()
    db.close()
    store = ScheduleStore(state, default_tz="UTC")
    [old] = store.list()
    assert old["id"] == "old1" and old["kind"] == "backup"
    clean, _ = validate_schedule(valid_fields(kind="test_restore"), known_stacks=STACKS, default_tz="UTC")
    added = store.add(clean, "admin")
    assert added["kind"] == "test_restore"
    assert {s["id"]: s["kind"] for s in ScheduleStore(state, default_tz="UTC").list()} == {
        "old1": "backup",
        added["id"]: "test_restore",
    }


def test_config_backup_schedule_ids_do_not_change_with_kinds_and_kinds_differ():
    entry = {"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00", "timezone": ""}
    assert config_schedule_id({**entry, "kind": "backup"}, 1) == config_schedule_id(entry, 1)
    assert config_schedule_id({**entry, "kind": "test_restore"}, 1) != config_schedule_id(entry, 1)
