"""The dashboard's side of schedules run by the agent: push the set, read back what ran, notify.

The dashboard edits schedules (config.yaml + the UI store) and the agent runs them, so a
dashboard outage never skips a backup.  :class:`ScheduleSync`:

- ``push()`` sends the whole set with a version (``PUT /schedules``): on every change, at
  start, and whenever the agent's applied version differs (``sync()``).  The version and a
  digest of the last set live in the schedule database, so a changed config.yaml gets a new
  version at start.  The very first push hands the old engine's state over:
  ``handled_through`` = the last due time it handled, so nothing runs twice or is skipped.
- ``view()`` is the agent's ``GET /schedules`` (None while it does not answer) for the page.
- ``watch()`` reads the agent's outcome records after a cursor kept in the same database and
  notifies failed and missed runs: what happened while the dashboard was down is notified once
  when it is back (marked so), never twice, never dropped (at most 7 days / 200 events one by
  one, then one summary line).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.schedule_store import runs_on
from fmappliance.schedule_fields import FIELDS, action_text
from fmappliance.wire import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

#: At most this many events are notified one by one after an outage; older than this they are summed up.
CATCHUP_EVENTS = 200
CATCHUP_AGE = timedelta(days=7)
#: The page reads the agent's view at most this often.
VIEW_CACHE_SECONDS = 2.0
PENDING = "pending: the agent is not answering"

_SCHEMA = "CREATE TABLE IF NOT EXISTS agent_sync (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class ScheduleSync:
    """See the module docstring. ``store`` is the :class:`ScheduleStore` (its database holds our state)."""

    def __init__(
        self,
        store,
        agent,
        *,
        catchup_hours: float,
        notify: Callable[[str, str, Mapping, str], None] | None = None,
        clock: Callable[[], datetime],
        server: str | None = None,
        local_name: str = "local",
    ):
        self.store = store
        self.agent = agent
        #: The fleet server this sync pushes to (None: the dashboard's own, ``local_name``): it sends
        #: that server only its own schedules, and keeps its version and cursor apart.
        self.server = server
        self.local_name = local_name
        self.name = server or local_name
        self.catchup_hours = catchup_hours
        self._notify = notify
        self._clock = clock
        self._lock = threading.RLock()
        self._view: dict | None = None
        self._view_at: float | None = None
        #: "applied" or PENDING (or the agent's refusal), for the page.
        self.state = PENDING
        # Whole seconds, as the agent writes its record times.
        self.started_at = clock().replace(microsecond=0)
        with store._db() as db:
            db.execute(_SCHEMA)

    # ---- our small key/value state ------------------------------------------------------

    def _key(self, key: str) -> str:
        # The dashboard's own server keeps the keys it had before the fleet.
        return key if self.server is None else f"{self.server}/{key}"

    def _get(self, key: str) -> str | None:
        key = self._key(key)
        with self.store._db() as db:
            row = db.execute("SELECT value FROM agent_sync WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def _set(self, **values) -> None:
        with self.store._db() as db:
            for key, value in values.items():
                key = self._key(key)
                db.execute(
                    "INSERT INTO agent_sync (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    # ---- the set --------------------------------------------------------------------------

    def desired(self) -> list[dict]:
        """The set the agent should run: every schedule except those config.yaml got wrong
        (an unknown zone; shown broken on the page, and the agent would refuse the whole set)."""
        out = []
        for schedule in self.store.list():
            if schedule.get("invalid") or not runs_on(schedule, self.server, self.local_name):
                continue
            out.append({"id": schedule["id"], **{k: schedule.get(k) for k in FIELDS}, "enabled": schedule["enabled"]})
        return out

    def version(self) -> int:
        """The version of the current set: bumped whenever the set differs from the last one."""
        with self._lock:
            entries = self.desired()
            digest = hashlib.sha256(json.dumps([entries, self.catchup_hours], sort_keys=True).encode()).hexdigest()
            version = int(self._get("version") or 0)
            if digest != self._get("digest"):
                version += 1
                self._set(version=version, digest=digest)
            return version

    def push(self) -> bool:
        """Send the whole set (``PUT /schedules``); True when the agent applied it."""
        with self._lock:
            version = self.version()
            entries = self.desired()
            body = {"version": version, "catchup_hours": self.catchup_hours, "schedules": entries}
            first = self._get("handed_over") is None
            if first:
                # The hand-over from the dashboard's old engine: what it handled is done.
                last_dues = self.store.last_dues()
                for entry in entries:
                    if last_dues.get(entry["id"]) is not None:
                        entry["handled_through"] = format_timestamp(last_dues[entry["id"]])
            try:
                self.agent.request("PUT", "/schedules", body)
            except AgentError as exc:
                if exc.status == 409:
                    # The agent holds a newer set (this database was restored from an older
                    # copy): ours is the operator's current intent, so it goes out above it.
                    return self._overtake(body)
                self.state = PENDING if exc.status is None or exc.status >= 500 else f"refused: {exc.message}"
                log.warning("Could not push schedule version %s to the agent: %s", version, exc)
                return False
            if first:
                self._set(handed_over=format_timestamp(self._clock()))
                log.info("Handed %d schedule(s) over to the agent (version %s).", len(entries), version)
            self.state = "applied"
            self._view_at = None
            return True

    def _overtake(self, body: dict) -> bool:
        try:
            _, view = self.agent.request("GET", "/schedules")
            applied = int(view.get("version") or 0)
        except (AgentError, TypeError, ValueError) as exc:
            log.warning(
                "The agent refused schedule version %s and cannot be asked which it has: %s", body["version"], exc
            )
            return False
        self._set(version=applied + 1)
        body["version"] = applied + 1
        try:
            self.agent.request("PUT", "/schedules", body)
        except AgentError as exc:
            log.warning("Could not push schedule version %s to the agent: %s", body["version"], exc)
            self.state = PENDING
            return False
        self._set(handed_over=self._get("handed_over") or format_timestamp(self._clock()))
        self.state = "applied"
        return True

    def sync(self) -> None:
        """Push when the agent's applied version is not ours (it lost its file, or missed a push)."""
        view = self.view(fresh=True)
        if view is None:
            return
        if view.get("version") != self.version():
            self.push()
        else:
            self.state = "applied"

    def view(self, fresh: bool = False) -> dict | None:
        """The agent's ``GET /schedules`` (cached briefly); None while it does not answer."""
        now = time.monotonic()  # the cache ages in real time, whatever clock the dashboard is given
        with self._lock:
            if not fresh and self._view_at is not None and now - self._view_at < VIEW_CACHE_SECONDS:
                return self._view
        try:
            _, view = self.agent.request("GET", "/schedules")
        except AgentError as exc:
            log.info("Could not read the agent's schedules: %s", exc)
            view = None
        with self._lock:
            self._view, self._view_at = view, now
            if view is None:
                self.state = PENDING
            elif view.get("version") == int(self._get("version") or 0):
                self.state = "applied"
        return view

    # ---- notifications --------------------------------------------------------------------

    def watch(self) -> int:
        """Notify failed and missed runs recorded by the agent since the cursor; returns how many."""
        cursor = int(self._get("cursor") or 0)
        try:
            _, page = self.agent.request("GET", f"/schedules/history?after={cursor}")
        except AgentError as exc:
            log.info("Could not read the agent's schedule history: %s", exc)
            return 0
        if int(page.get("next_seq") or 1) - 1 < cursor:
            # The agent's history started over (its state dir was replaced): read it from the start.
            cursor = 0
            self._set(cursor=0)
            return self.watch()
        records: list[dict] = []
        while True:
            runs = page.get("runs") or []
            records += runs
            if not runs:
                break
            try:
                _, page = self.agent.request("GET", f"/schedules/history?after={runs[-1]['seq']}")
            except AgentError:
                break
        if not records:
            return 0
        now = self._clock()
        late: list[dict] = []
        recent: list[dict] = []
        for record in records:
            down = (parse_timestamp(record.get("at")) or now) < self.started_at
            if _notifiable(record, down):
                (late if down else recent).append(record)
        kept_late = [r for r in late if (parse_timestamp(r.get("at")) or now) >= now - CATCHUP_AGE][-CATCHUP_EVENTS:]
        dropped = len(late) - len(kept_late)
        if dropped:
            self._send(
                "backup_failed",
                f"{dropped} more failed or missed scheduled run(s) while the dashboard was down",
                {"count": dropped, "while_dashboard_down": True, "server": self.name},
                f"{dropped} older failed or missed scheduled run(s) (more than {CATCHUP_EVENTS} events or older "
                f"than {CATCHUP_AGE.days} days) are not listed one by one; see each schedule's last result on "
                "the Schedules page and the agent's jobs.",
            )
        for record in kept_late:
            self._notify_record(record, down=True)
        for record in recent:
            self._notify_record(record, down=False)
        self._set(cursor=records[-1]["seq"])
        return len(kept_late) + len(recent) + (1 if dropped else 0)

    def _notify_record(self, record: Mapping, *, down: bool) -> None:
        what = action_text(record)
        target = "every site" if record.get("site") == "*" else record.get("site")
        when = " (while the dashboard was down)" if down else ""
        if record["status"] == "missed":
            event, subject = "backup_missed", f"Scheduled {what} of {target} on {self._where(record)} missed{when}"
        else:
            event = "restore_test_failed" if record.get("kind") == "test_restore" else "backup_failed"
            subject = f"Scheduled {what} of {target} on {self._where(record)} failed{when}"
        details = {
            "server": self.name,
            "schedule_id": record.get("schedule"),
            "stack": record.get("stack"),
            "site": record.get("site"),
            "due": record.get("due"),
            "job_id": record.get("job"),
            "while_dashboard_down": down,
        }
        if record.get("missed"):
            details["missed"] = record["missed"]
        self._send(event, subject, details, record.get("message") or f"The scheduled {what} failed.")

    def _where(self, record: Mapping) -> str:
        return str(record.get("stack")) + ("" if self.server is None else f" of server {self.server}")

    def _send(self, event: str, subject: str, details: Mapping, message: str) -> None:
        if self._notify is not None:
            self._notify(event, subject, details, message)


def _notifiable(record: Mapping, down: bool) -> bool:
    if record.get("status") == "missed":
        return True
    if record.get("status") != "failed":
        return False
    # While the dashboard runs, a failed test-restore *job* is notified by the failed-job
    # watcher (restore_test_failed for every test restore, scheduled or not); that watcher
    # does not look back past its start, so what failed while the dashboard was down is ours.
    return down or not (record.get("kind") == "test_restore" and record.get("job"))
