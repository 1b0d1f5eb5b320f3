"""Backup schedules: validation of the add form, next-run arithmetic and the SQLite store.

A schedule is a plain dict::

    {"id", "stack", "site" ("*" = every site), "frequency" ("daily"|"weekly"|"monthly"),
     "time" ("HH:MM"), "day_of_week" ("mon".."sun" | None), "day_of_month" (1..28 | None),
     "timezone" (IANA name), "enabled", "created_by", "created_at" (ISO UTC | None),
     "source" ("ui"|"config"), "invalid" (None | operator sentence)}

Schedules added in the UI live in ``<state_dir>/schedules.sqlite3`` (a file of its own, so
the scheduler never contends with the sessions/audit database); schedules declared in
config.yaml are merged in by :meth:`ScheduleStore.list` and cannot be removed or toggled here.
The same database keeps, per schedule, the last due time already handled (so a restart
never runs a due time twice) and every run with the agent job it started.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from fmappliance.names import SITE_NAME_RULE, STACK_NAME_RULE, is_valid_site_name, is_valid_stack_name

FREQUENCIES = ("daily", "weekly", "monthly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_SITE = "*"
#: How long each frequency may go without a backup before the dashboard raises an alert
#: (twice the interval; a month counts as 31 days).
INTERVALS = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=31)}
#: Results of a run row. ``pending`` exists only between the due time being taken and the
#: hand-off to the agent; one left over after a crash is turned into ``failed``.
RUN_RESULTS = ("pending", "submitted", "failed", "missed", "skipped")
FINAL_JOB_STATUSES = ("succeeded", "failed")

_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)", re.ASCII)
_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", re.ASCII)
# Present in the zoneinfo directory but not time zones anyone means.
_NOT_ZONES = {"localtime", "Factory", "posixrules"}


class ScheduleError(Exception):
    """A schedule change that cannot be made; ``str()`` is a sentence for the operator."""


# --------------------------------------------------------------------------------------
# Time zones
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset:
    return frozenset(available_timezones()) - _NOT_ZONES


def is_valid_timezone(name: object) -> bool:
    """True for an IANA zone name this system knows (Europe/Berlin, UTC, ...)."""
    if not isinstance(name, str) or not _TZ_NAME.fullmatch(name) or name in _NOT_ZONES:
        return False
    known = _zone_names()
    if known:
        return name in known
    try:  # no listing available (unusual tzdata layout): ask zoneinfo directly
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def server_timezone() -> str:
    """The server's IANA zone name: $TZ, /etc/timezone, the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    # Only an abbreviation like "UTC" or "CET" is available here; usable when it is a zone name.
    candidates.append(datetime.now().astimezone().tzname() or "")
    for name in candidates:
        if name and is_valid_timezone(name):
            return name
    return "UTC"


# --------------------------------------------------------------------------------------
# Validation of the add form
# --------------------------------------------------------------------------------------


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def validate_schedule(fields: Mapping, *, known_stacks: Mapping | None, default_tz: str) -> tuple[dict | None, dict]:
    """Check the add form; return ``(clean, {})`` or ``(None, {field: message})``.

    ``known_stacks`` maps each stack to its site list (None: sites unknown, any well-formed
    name accepted); ``known_stacks=None`` skips the existence checks (agent unreachable).
    Fields not listed here (csrf_token, ...) are ignored.
    """
    errors: dict[str, str] = {}
    stack = _text(fields.get("stack"))
    site = _text(fields.get("site")) or EVERY_SITE
    frequency = _text(fields.get("frequency")).lower()
    at = _text(fields.get("time"))
    day_of_week = _text(fields.get("day_of_week")).lower()[:3] or None
    day_of_month_text = _text(fields.get("day_of_month"))
    tz = _text(fields.get("timezone")) or default_tz

    if not stack:
        errors["stack"] = "Pick the stack to back up."
    elif not is_valid_stack_name(stack):
        errors["stack"] = f"A stack name is {STACK_NAME_RULE}."
    elif known_stacks is not None and stack not in known_stacks:
        names = ", ".join(sorted(known_stacks)) or "none configured"
        errors["stack"] = f"There is no stack named {stack!r} (known stacks: {names})."

    if site != EVERY_SITE:
        if not is_valid_site_name(site):
            errors["site"] = f"A site name is {SITE_NAME_RULE}; or use * for every site of the stack."
        elif known_stacks is not None and "stack" not in errors:
            sites = known_stacks.get(stack)
            if sites is not None and site not in sites:
                listed = ", ".join(sites) or "no sites yet"
                errors["site"] = f"Stack {stack!r} has no site {site!r} (its sites: {listed}); or use * for every site."

    if frequency not in FREQUENCIES:
        errors["frequency"] = "Choose how often: daily, weekly or monthly."

    if not _TIME.fullmatch(at):
        errors["time"] = "Give the time as HH:MM on a 24-hour clock, from 00:00 to 23:59 (for example 02:30)."

    day_of_month = None
    if frequency == "weekly":
        if day_of_week not in WEEKDAYS:
            errors["day_of_week"] = "Pick the day of the week: mon, tue, wed, thu, fri, sat or sun."
    else:
        day_of_week = None
    if frequency == "monthly":
        if not re.fullmatch(r"\d{1,2}", day_of_month_text, re.ASCII) or not 1 <= int(day_of_month_text) <= 28:
            errors["day_of_month"] = "Pick a day of the month from 1 to 28 (29-31 don't exist in every month)."
        else:
            day_of_month = int(day_of_month_text)

    if not is_valid_timezone(tz):
        errors["timezone"] = (
            f"Unknown time zone {tz!r}: use an IANA name such as Europe/Berlin, "
            "America/New_York or UTC (or leave it empty for the server's)."
        )

    if errors:
        return None, errors
    return {
        "stack": stack,
        "site": site,
        "frequency": frequency,
        "time": at,
        "day_of_week": day_of_week,
        "day_of_month": day_of_month,
        "timezone": tz,
        "enabled": True,
    }, {}


# --------------------------------------------------------------------------------------
# Next-run arithmetic
# --------------------------------------------------------------------------------------


def _local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The one instant a schedule fires on ``day`` at wall time ``at`` in ``zone``.

    DST rule (documented for the operator too):
    - wall time repeated (fall back, e.g. 02:30 twice): the FIRST occurrence (fold=0);
    - wall time skipped (spring forward, e.g. 02:30 does not exist): the first valid
      instant after the gap, i.e. the moment the clocks jump (03:00 in Europe/Berlin and
      America/New_York). Either way a schedule fires exactly once on that day.
    """
    wall = datetime.combine(day, at, tzinfo=zone)  # fold=0
    utc = wall.astimezone(timezone.utc)
    if utc.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return utc.astimezone(zone)
    # In a gap. With fold=0 the pre-transition offset is used, with fold=1 the post one, so
    # the transition lies between those two UTC readings: binary-search it to the second.
    lo = wall.replace(fold=1).astimezone(timezone.utc)  # before the jump
    hi = utc  # after the jump
    after_offset = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(zone)


def _matches(schedule: Mapping, day: date) -> bool:
    if schedule["frequency"] == "weekly":
        return day.weekday() == WEEKDAYS.index(schedule["day_of_week"])
    if schedule["frequency"] == "monthly":
        return day.day == int(schedule["day_of_month"])
    return True


def iter_runs(schedule: Mapping, after: datetime) -> Iterator[datetime]:
    """Run instants strictly after ``after`` (aware), in the schedule's zone, forever."""
    zone = ZoneInfo(schedule["timezone"])
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time, ignoring fold.
    after = after.astimezone(timezone.utc)
    hour, minute = (int(p) for p in schedule["time"].split(":"))
    at = time(hour, minute)
    # Start a day early: a run on the previous local date can still be after ``after``
    # only in theory (offsets are < 1 day), but it keeps the edge cases obvious.
    day = after.astimezone(zone).date() - timedelta(days=1)
    while True:
        if _matches(schedule, day):
            instant = _local_instant(day, at, zone)
            if instant > after:
                yield instant
        day += timedelta(days=1)


def next_runs(schedule: Mapping, after: datetime, count: int = 3) -> list[datetime]:
    """The next ``count`` run times strictly after ``after``, aware, in the schedule's zone."""
    runs = iter_runs(schedule, after)
    return [next(runs) for _ in range(count)]


def runs_between(schedule: Mapping, start: datetime, end: datetime, limit: int = 10000) -> list[datetime]:
    """Run instants in ``(start, end]`` (at most ``limit``, the latest kept)."""
    out: list[datetime] = []
    end = end.astimezone(timezone.utc)
    for instant in iter_runs(schedule, start):
        if instant > end:
            break
        out.append(instant)
        if len(out) > limit:
            out.pop(0)
    return out


# --------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------


def to_iso(moment: datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, seconds precision (the agent's format)."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY, stack TEXT NOT NULL, site TEXT NOT NULL, frequency TEXT NOT NULL,
    time TEXT NOT NULL, day_of_week TEXT, day_of_month INTEGER, timezone TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1, created_by TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS schedule_state (
    schedule_id TEXT PRIMARY KEY, last_due TEXT, tracked_since TEXT, broken_reason TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, schedule_id TEXT NOT NULL, stack TEXT NOT NULL,
    site TEXT NOT NULL, due TEXT NOT NULL, started TEXT NOT NULL, job_id TEXT,
    result TEXT NOT NULL, message TEXT NOT NULL DEFAULT '', catch_up INTEGER NOT NULL DEFAULT 0,
    job_status TEXT);
CREATE INDEX IF NOT EXISTS runs_by_schedule ON runs (schedule_id, id);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_id);
"""

_FIELDS = ("stack", "site", "frequency", "time", "day_of_week", "day_of_month", "timezone")


def config_schedule_id(entry: Mapping, occurrence: int) -> str:
    """Stable id of a config-declared schedule: ``cfg-<n>-<hash of its definition>``.

    ``n`` counts identical entries (1 for the first), not the position in the list, so
    adding, removing or reordering other entries keeps ids, and with them the last runs.
    """
    definition = json.dumps([entry.get(k) for k in _FIELDS], separators=(",", ":"))
    return f"cfg-{occurrence}-{hashlib.sha256(definition.encode()).hexdigest()[:10]}"


def _config_schedule(entry: Mapping, occurrence: int, default_tz: str) -> dict:
    frequency = entry.get("frequency", "daily")
    tz = entry.get("timezone") or default_tz
    schedule = {
        "id": config_schedule_id(entry, occurrence),
        "stack": entry["stack"],
        "site": entry.get("site") or EVERY_SITE,
        "frequency": frequency,
        "time": entry.get("time", "02:00"),
        "day_of_week": entry.get("day_of_week", "sun") if frequency == "weekly" else None,
        "day_of_month": int(entry.get("day_of_month", 1)) if frequency == "monthly" else None,
        "timezone": tz,
        "enabled": bool(entry.get("enabled", True)),
        "created_by": "config.yaml",
        "created_at": None,
        "source": "config",
        "invalid": None,
    }
    # config.py checks shapes but cannot know the zone database; an unknown zone makes the
    # schedule visible-but-broken rather than stopping the dashboard.
    if not is_valid_timezone(tz):
        schedule["invalid"] = f"Unknown time zone {tz!r} in config.yaml; use an IANA name such as Europe/Berlin."
    return schedule


class ScheduleStore:
    """Schedules (UI-added and config-declared), their due-time state and their runs."""

    def __init__(
        self,
        state_dir,
        *,
        config_schedules=(),
        default_tz: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.path = Path(state_dir) / "schedules.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.default_tz = default_tz or server_timezone()
        self._clock = clock or _utc_now
        self._lock = threading.Lock()
        #: Bumped by every definition change made through this store, so an engine sharing
        #: it picks the change up at its next tick.
        self.generation = 0
        counts: dict[str, int] = {}
        self._config: list[dict] = []
        for entry in config_schedules or ():
            key = json.dumps([entry.get(k) for k in _FIELDS])
            counts[key] = counts.get(key, 0) + 1
            self._config.append(_config_schedule(entry, counts[key], self.default_tz))
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self):
        # A connection per operation: callers are the loop thread, submit workers and
        # request threads; the lock keeps writers from tripping over each other.
        with self._lock:
            db = sqlite3.connect(self.path, timeout=10)
            db.row_factory = sqlite3.Row
            try:
                with db:
                    yield db
            finally:
                db.close()

    # ---- definitions ------------------------------------------------------------------

    def _row_to_schedule(self, row) -> dict:
        schedule = {k: row[k] for k in ("id",) + _FIELDS}
        schedule.update(
            enabled=bool(row["enabled"]),
            created_by=row["created_by"],
            created_at=row["created_at"],
            source="ui",
            invalid=None,
        )
        return schedule

    def list(self) -> list[dict]:
        """Every schedule: config-declared first (``source: "config"``), then UI-added by age."""
        with self._db() as db:
            rows = db.execute("SELECT * FROM schedules ORDER BY created_at, id").fetchall()
            states = {r["schedule_id"]: r for r in db.execute("SELECT * FROM schedule_state")}
        out = []
        for schedule in self._config:
            schedule = dict(schedule)
            state = states.get(schedule["id"])
            schedule["created_at"] = state["tracked_since"] if state else None
            out.append(schedule)
        out += [self._row_to_schedule(r) for r in rows]
        for schedule in out:
            state = states.get(schedule["id"])
            schedule["broken_reason"] = schedule["invalid"] or (state["broken_reason"] if state else None)
        return out

    def get(self, schedule_id: str) -> dict | None:
        return next((s for s in self.list() if s["id"] == schedule_id), None)

    def add(self, clean: Mapping, created_by: str) -> dict:
        """Store a schedule that passed :func:`validate_schedule`; returns it with its id."""
        schedule_id = secrets.token_hex(6)
        now = to_iso(self._clock())
        with self._db() as db:
            db.execute(
                "INSERT INTO schedules (id, stack, site, frequency, time, day_of_week, day_of_month, timezone,"
                " enabled, created_by, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    schedule_id,
                    clean["stack"],
                    clean["site"],
                    clean["frequency"],
                    clean["time"],
                    clean.get("day_of_week"),
                    clean.get("day_of_month"),
                    clean["timezone"],
                    int(clean.get("enabled", True)),
                    created_by,
                    now,
                ),
            )
            # Due times are counted from creation: nothing before it is "missed".
            db.execute(
                "INSERT OR REPLACE INTO schedule_state (schedule_id, last_due, tracked_since) VALUES (?,?,?)",
                (schedule_id, now, now),
            )
        self.generation += 1
        return self.get(schedule_id)

    def _refuse_config(self, schedule_id: str, what: str) -> None:
        if any(s["id"] == schedule_id for s in self._config):
            raise ScheduleError(f"This schedule is declared in config.yaml; {what} it there and restart the dashboard.")

    def remove(self, schedule_id: str) -> bool:
        """Delete a UI-added schedule (its run history too). False: no such schedule.

        Raises :class:`ScheduleError` for a config-declared schedule.
        """
        self._refuse_config(schedule_id, "remove")
        with self._db() as db:
            gone = db.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount
            if gone:
                db.execute("DELETE FROM schedule_state WHERE schedule_id = ?", (schedule_id,))
                db.execute("DELETE FROM runs WHERE schedule_id = ?", (schedule_id,))
        self.generation += 1
        return bool(gone)

    def set_enabled(self, schedule_id: str, enabled: bool) -> bool:
        """Pause or resume a UI-added schedule. False: no such schedule.

        Resuming never makes up the runs skipped while paused: the due-time state moves to now.
        """
        self._refuse_config(schedule_id, "enable or disable")
        now = to_iso(self._clock())
        with self._db() as db:
            changed = db.execute(
                "UPDATE schedules SET enabled = ? WHERE id = ?", (int(bool(enabled)), schedule_id)
            ).rowcount
            if changed and enabled:
                db.execute("UPDATE schedule_state SET last_due = ? WHERE schedule_id = ?", (now, schedule_id))
        self.generation += 1
        return bool(changed)

    # ---- due-time state ---------------------------------------------------------------

    def last_dues(self) -> dict[str, datetime | None]:
        """``last_due`` of every schedule with state, in one query."""
        with self._db() as db:
            rows = db.execute("SELECT schedule_id, last_due FROM schedule_state").fetchall()
        return {r["schedule_id"]: from_iso(r["last_due"]) for r in rows}

    def last_due(self, schedule_id: str) -> datetime | None:
        """The latest due time already handled (run, caught up or recorded missed)."""
        with self._db() as db:
            row = db.execute("SELECT last_due FROM schedule_state WHERE schedule_id = ?", (schedule_id,)).fetchone()
        return from_iso(row["last_due"]) if row else None

    def set_last_due(self, schedule_id: str, due: datetime) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO schedule_state (schedule_id, last_due, tracked_since) VALUES (?,?,?)"
                " ON CONFLICT (schedule_id) DO UPDATE SET last_due = excluded.last_due",
                (schedule_id, to_iso(due), to_iso(due)),
            )

    def set_broken(self, schedule_id: str, reason: str | None) -> None:
        """Mark a schedule broken (its stack or site is gone) or clear the mark (None)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO schedule_state (schedule_id, broken_reason) VALUES (?,?)"
                " ON CONFLICT (schedule_id) DO UPDATE SET broken_reason = excluded.broken_reason",
                (schedule_id, reason),
            )

    # ---- runs -------------------------------------------------------------------------

    def record_run(
        self,
        schedule_id: str,
        due: datetime,
        started: datetime,
        job_id: str | None,
        result: str,
        message: str = "",
        catch_up: bool = False,
        *,
        site: str | None = None,
        stack: str | None = None,
        job_status: str | None = None,
    ) -> int:
        """Add one run row; returns its id. ``site``/``stack`` default to the schedule's."""
        if result not in RUN_RESULTS:
            raise ValueError(f"unknown run result {result!r}")
        if stack is None or site is None:
            schedule = self.get(schedule_id) or {}
            stack = stack or schedule.get("stack", "")
            site = site or schedule.get("site", EVERY_SITE)
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO runs (schedule_id, stack, site, due, started, job_id, result, message, catch_up, job_status)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    schedule_id,
                    stack,
                    site,
                    to_iso(due),
                    to_iso(started),
                    job_id,
                    result,
                    message,
                    int(catch_up),
                    job_status,
                ),
            )
            return cur.lastrowid

    def replace_run(self, run_id: int, rows: list[dict]) -> None:
        """Swap a ``pending`` run row for its outcome rows (one per site) in one transaction."""
        with self._db() as db:
            old = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if old is None:
                return
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            for row in rows:
                db.execute(
                    "INSERT INTO runs (schedule_id, stack, site, due, started, job_id, result, message, catch_up, job_status)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        old["schedule_id"],
                        old["stack"],
                        row.get("site", old["site"]),
                        old["due"],
                        to_iso(row["started"]) if row.get("started") else old["started"],
                        row.get("job_id"),
                        row["result"],
                        row.get("message", ""),
                        old["catch_up"],
                        row.get("job_status"),
                    ),
                )

    def fail_interrupted_runs(self) -> list[dict]:
        """Turn ``pending`` rows left by a crash into ``failed``; returns them (to notify)."""
        message = "The dashboard stopped before this backup was handed to the agent; it was not run."
        with self._db() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM runs WHERE result = 'pending'")]
            db.execute("UPDATE runs SET result = 'failed', message = ? WHERE result = 'pending'", (message,))
        for row in rows:
            row.update(result="failed", message=message)
        return rows

    def runs(self, schedule_id: str, limit: int = 20) -> list[dict]:
        """Run rows of a schedule, newest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE schedule_id = ? ORDER BY id DESC LIMIT ?", (schedule_id, limit)
            ).fetchall()
        return [_run_dict(r) for r in rows]

    def last_run(self, schedule_id: str) -> dict | None:
        """The newest run row of a schedule, or None."""
        runs = self.runs(schedule_id, 1)
        return runs[0] if runs else None

    def last_runs(self, schedule_id: str) -> list[dict]:
        """All rows of the schedule's latest due time (several for an every-site schedule)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE schedule_id = ? AND due = (SELECT due FROM runs WHERE schedule_id = ?"
                " ORDER BY id DESC LIMIT 1) ORDER BY id",
                (schedule_id, schedule_id),
            ).fetchall()
        return [_run_dict(r) for r in rows]

    def update_run_result(self, job_id: str, status: str) -> list[dict]:
        """Record the agent job's status on its run rows; returns the rows that changed."""
        with self._db() as db:
            rows = [
                dict(r)
                for r in db.execute(
                    "SELECT * FROM runs WHERE job_id = ? AND (job_status IS NULL OR job_status != ?)", (job_id, status)
                )
            ]
            db.execute("UPDATE runs SET job_status = ? WHERE job_id = ?", (status, job_id))
        for row in rows:
            row["job_status"] = status
        return [_run_dict(r) for r in rows]

    def unfinished_jobs(self, since: datetime) -> list[str]:
        """Job ids of submitted runs since ``since`` whose outcome is not known yet."""
        with self._db() as db:
            rows = db.execute(
                "SELECT DISTINCT job_id FROM runs WHERE result = 'submitted' AND job_id IS NOT NULL"
                " AND (job_status IS NULL OR job_status NOT IN ('succeeded', 'failed')) AND started >= ?",
                (to_iso(since),),
            ).fetchall()
        return [r["job_id"] for r in rows]


def _run_dict(row) -> dict:
    run = dict(row)
    run["catch_up"] = bool(run["catch_up"])
    return run
