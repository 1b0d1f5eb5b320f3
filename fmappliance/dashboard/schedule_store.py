"""The schedule store: UI-added schedules, due-time state and runs in SQLite.

Schedules added in the UI live in ``<state_dir>/schedules.sqlite3`` (a file of its own, so
the scheduler never contends with the sessions/audit database); schedules declared in
config.yaml are merged in by :meth:`ScheduleStore.list` and cannot be removed or toggled here.
The same database keeps, per schedule, the last due time already handled (so a restart
never runs a due time twice) and every run with the agent job it started.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from fmappliance.schedule_calendar import is_valid_timezone, server_timezone
from fmappliance.schedule_fields import DEFAULT_KIND, EVERY_SITE, FIELDS, ScheduleError, kind_of
from fmappliance.wire import format_timestamp, parse_timestamp

#: Results of a run row. ``pending`` exists only between the due time being taken and the
#: hand-off to the agent; one left over after a crash is turned into ``failed``.
RUN_RESULTS = ("pending", "submitted", "failed", "missed", "skipped")


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS schedules (
    id TEXT PRIMARY KEY, stack TEXT NOT NULL, site TEXT NOT NULL, frequency TEXT NOT NULL,
    time TEXT NOT NULL, day_of_week TEXT, day_of_month INTEGER, timezone TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1, created_by TEXT NOT NULL, created_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'backup');
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


def _definition(entry: Mapping) -> list:
    # A backup schedule hashes as it did before schedules had a kind, so its id (and with
    # it its last due time and runs) survives the upgrade; one on the dashboard's own server
    # as before schedules had a server.
    values = [entry.get(k) for k in FIELDS if k != "kind"]
    values = values if kind_of(entry) == DEFAULT_KIND else [kind_of(entry), *values]
    return values + [entry["server"]] if entry.get("server") else values


def runs_on(schedule: Mapping, server: str | None, local_name: str) -> bool:
    """Does ``schedule`` run on ``server`` (None: the dashboard's own, ``local_name``)?

    A schedule without a server (every one from before the fleet) runs on the dashboard's own.
    """
    return (schedule.get("server") or local_name) == (server or local_name)


def config_schedule_id(entry: Mapping, occurrence: int) -> str:
    """Stable id of a config-declared schedule: ``cfg-<n>-<hash of its definition>``.

    ``n`` counts identical entries (1 for the first), not the position in the list, so
    adding, removing or reordering other entries keeps ids, and with them the last runs.
    """
    definition = json.dumps(_definition(entry), separators=(",", ":"))
    return f"cfg-{occurrence}-{hashlib.sha256(definition.encode()).hexdigest()[:10]}"


def _config_schedule(entry: Mapping, occurrence: int, default_tz: str) -> dict:
    frequency = entry.get("frequency", "daily")
    tz = entry.get("timezone") or default_tz
    schedule = {
        "id": config_schedule_id(entry, occurrence),
        "kind": kind_of(entry),
        "stack": entry["stack"],
        "site": entry.get("site") or EVERY_SITE,
        "frequency": frequency,
        "time": entry.get("time", "02:00"),
        "day_of_week": entry.get("day_of_week", "sun") if frequency == "weekly" else None,
        "day_of_month": int(entry.get("day_of_month", 1)) if frequency == "monthly" else None,
        "timezone": tz,
        "enabled": bool(entry.get("enabled", True)),
        "server": entry.get("server") or "",
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
            key = json.dumps(_definition(entry))
            counts[key] = counts.get(key, 0) + 1
            self._config.append(_config_schedule(entry, counts[key], self.default_tz))
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            columns = {r["name"] for r in db.execute("PRAGMA table_info(schedules)")}
            if "kind" not in columns:
                # Stores from before kinds existed: every row there is a backup schedule.
                db.execute("ALTER TABLE schedules ADD COLUMN kind TEXT NOT NULL DEFAULT 'backup'")
            if "server" not in columns:
                # The fleet: which server's agent runs it ('' = the dashboard's own).
                db.execute("ALTER TABLE schedules ADD COLUMN server TEXT NOT NULL DEFAULT ''")

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
        schedule = {k: row[k] for k in ("id",) + FIELDS}
        schedule.update(
            enabled=bool(row["enabled"]),
            server=row["server"],
            created_by=row["created_by"],
            created_at=row["created_at"],
            source="ui",
            invalid=None,
        )
        return schedule

    def list(self) -> builtins.list[dict]:
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
        now = format_timestamp(self._clock())
        with self._db() as db:
            db.execute(
                "INSERT INTO schedules (id, kind, stack, site, frequency, time, day_of_week, day_of_month, timezone,"
                " enabled, created_by, created_at, server) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    schedule_id,
                    kind_of(clean),
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
                    clean.get("server") or "",
                ),
            )
            # Due times are counted from creation: nothing before it is "missed".
            db.execute(
                "INSERT OR REPLACE INTO schedule_state (schedule_id, last_due, tracked_since) VALUES (?,?,?)",
                (schedule_id, now, now),
            )
        self.generation += 1
        schedule = self.get(schedule_id)
        assert schedule is not None, schedule_id  # just inserted
        return schedule

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
        now = format_timestamp(self._clock())
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
        return {r["schedule_id"]: parse_timestamp(r["last_due"]) for r in rows}

    def last_due(self, schedule_id: str) -> datetime | None:
        """The latest due time already handled (run, caught up or recorded missed)."""
        with self._db() as db:
            row = db.execute("SELECT last_due FROM schedule_state WHERE schedule_id = ?", (schedule_id,)).fetchone()
        return parse_timestamp(row["last_due"]) if row else None

    def set_last_due(self, schedule_id: str, due: datetime) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO schedule_state (schedule_id, last_due, tracked_since) VALUES (?,?,?)"
                " ON CONFLICT (schedule_id) DO UPDATE SET last_due = excluded.last_due",
                (schedule_id, format_timestamp(due), format_timestamp(due)),
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
                    format_timestamp(due),
                    format_timestamp(started),
                    job_id,
                    result,
                    message,
                    int(catch_up),
                    job_status,
                ),
            )
            return cur.lastrowid

    def replace_run(self, run_id: int, rows: builtins.list[dict]) -> None:
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
                        format_timestamp(row["started"]) if row.get("started") else old["started"],
                        row.get("job_id"),
                        row["result"],
                        row.get("message", ""),
                        old["catch_up"],
                        row.get("job_status"),
                    ),
                )

    def fail_interrupted_runs(self) -> builtins.list[dict]:
        """Turn ``pending`` rows left by a crash into ``failed``; returns them (to notify)."""
        message = "The dashboard stopped before this backup was handed to the agent; it was not run."
        with self._db() as db:
            rows = [dict(r) for r in db.execute("SELECT * FROM runs WHERE result = 'pending'")]
            db.execute("UPDATE runs SET result = 'failed', message = ? WHERE result = 'pending'", (message,))
        for row in rows:
            row.update(result="failed", message=message)
        return rows

    def runs(self, schedule_id: str, limit: int = 20) -> builtins.list[dict]:
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

    def last_runs(self, schedule_id: str) -> builtins.list[dict]:
        """All rows of the schedule's latest due time (several for an every-site schedule)."""
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE schedule_id = ? AND due = (SELECT due FROM runs WHERE schedule_id = ?"
                " ORDER BY id DESC LIMIT 1) ORDER BY id",
                (schedule_id, schedule_id),
            ).fetchall()
        return [_run_dict(r) for r in rows]

    def missed_counts(self) -> dict[str, int]:
        """schedule id -> how many runs were recorded missed (for the metrics), in one query."""
        with self._db() as db:
            rows = db.execute(
                "SELECT schedule_id, COUNT(*) AS n FROM runs WHERE result = 'missed' GROUP BY schedule_id"
            ).fetchall()
        return {r["schedule_id"]: r["n"] for r in rows}

    def update_run_result(self, job_id: str, status: str) -> builtins.list[dict]:
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

    def unfinished_jobs(self, since: datetime) -> builtins.list[str]:
        """Job ids of submitted runs since ``since`` whose outcome is not known yet."""
        with self._db() as db:
            rows = db.execute(
                "SELECT DISTINCT job_id FROM runs WHERE result = 'submitted' AND job_id IS NOT NULL"
                " AND (job_status IS NULL OR job_status NOT IN ('succeeded', 'failed')) AND started >= ?",
                (format_timestamp(since),),
            ).fetchall()
        return [r["job_id"] for r in rows]


def _run_dict(row) -> dict:
    run = dict(row)
    run["catch_up"] = bool(run["catch_up"])
    return run
