"""The audit log: one SQLite row and one JSON log line per event.

Fields: UTC time, user, real client address, action, target, result, job id, and in a fleet the
server the request was about and its request id (the ``X-FM-Request`` its agent recorded).  Control
characters in any field are escaped (``\\x1b``), so a crafted name cannot forge log
lines or terminal escapes.

Failed and throttled sign-ins come in bursts: :meth:`AuditLog.record_repeat` folds the
repeats of one (user, address, action, result) within ``REPEAT_WINDOW_SECONDS`` into one
row with a ``count``, so an attack cannot grow the table without bound.  Rows older than
``dashboard.audit_days`` are deleted (at start and then hourly).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable

from fmappliance.wire import format_timestamp

audit_log = logging.getLogger("fmappliance.audit")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FIELDS = ("time", "user", "address", "action", "target", "result", "job_id", "count", "server", "request_id")
_COLUMNS = ", ".join(FIELDS)
REPEAT_WINDOW_SECONDS = 10 * 60
PRUNE_EVERY_SECONDS = 3600


def escape_control(value) -> str:
    if value is None:
        return ""
    text = str(value)[:1000]
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


class AuditLog:
    def __init__(self, db, clock=time.time, keep_days: int = 365, context=None):
        self.db = db
        #: () -> {"server", "request_id"} of the request being served (set by the app; issue 24).
        self.context: Callable[[], dict] = context or dict
        self.clock = clock
        self.keep_days = keep_days
        self._pruned_at = 0.0
        with self.db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS audit ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, user TEXT NOT NULL,"
                " address TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
                " result TEXT NOT NULL, job_id TEXT NOT NULL)"
            )
            columns = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
            if "count" not in columns:
                conn.execute("ALTER TABLE audit ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
            # The fleet: which server an action was on, and the id its agent's fleet audit shows.
            for column in ("server", "request_id"):
                if column not in columns:
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
            conn.execute("CREATE INDEX IF NOT EXISTS audit_time ON audit (time)")
            conn.execute("CREATE INDEX IF NOT EXISTS audit_action ON audit (action)")
        self.prune()

    def prune(self) -> int:
        """Delete rows older than ``keep_days``; returns how many went."""
        now = self.clock()
        self._pruned_at = now
        with self.db.transaction() as conn:
            return conn.execute(
                "DELETE FROM audit WHERE time < ?", (format_timestamp(now - self.keep_days * 86400),)
            ).rowcount

    def record_repeat(self, *, user, address, action, target="", result) -> dict:
        """Like :meth:`record`, but a repeat within the window only counts up the earlier row."""
        since = format_timestamp(self.clock() - REPEAT_WINDOW_SECONDS)
        key = tuple(escape_control(v) for v in (user, address, action, target, result))
        with self.db.transaction() as conn:
            found = conn.execute(
                "SELECT id, count FROM audit WHERE user = ? AND address = ? AND action = ? AND target = ? AND result = ?"
                " AND time >= ? ORDER BY id DESC LIMIT 1",
                key + (since,),
            ).fetchone()
            if found:
                conn.execute(
                    "UPDATE audit SET count = count + 1, time = ? WHERE id = ?",
                    (format_timestamp(self.clock()), found[0]),
                )
        if found:
            context = self._context()
            row = dict(
                zip(
                    FIELDS,
                    (format_timestamp(self.clock()),)
                    + key
                    + ("", found[1] + 1, context["server"], context["request_id"]),
                )
            )
            audit_log.info(json.dumps(row, ensure_ascii=True, sort_keys=True))
            return row
        return self.record(user=user, address=address, action=action, target=target, result=result)

    def _context(self) -> dict:
        try:
            found = self.context() or {}
        except Exception:  # never lose an audit row over its context
            found = {}
        return {
            "server": escape_control(found.get("server", "")),
            "request_id": escape_control(found.get("request_id", "")),
        }

    def record(self, *, user, address, action, target="", result="ok", job_id=None) -> dict:
        """Store one event and log it as a JSON line; returns the stored row."""
        if self.clock() - self._pruned_at > PRUNE_EVERY_SECONDS:
            self.prune()
        row = {
            **self._context(),
            "time": format_timestamp(self.clock()),
            "user": escape_control(user),
            "address": escape_control(address),
            "action": escape_control(action),
            "target": escape_control(target),
            "result": escape_control(result),
            "job_id": escape_control(job_id),
            "count": 1,
        }
        with self.db.transaction() as conn:
            conn.execute(
                f"INSERT INTO audit ({_COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})",
                tuple(row[f] for f in FIELDS),
            )
        audit_log.info(json.dumps(row, ensure_ascii=True, sort_keys=True))
        return row

    def recent(self, limit: int = 200, offset: int = 0) -> list[dict]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                # A counted-up row moves to its latest time.
                f"SELECT {_COLUMNS} FROM audit ORDER BY time DESC, id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [dict(zip(FIELDS, r)) for r in rows]

    def search(
        self,
        *,
        user: str = "",
        action: str = "",
        target: str = "",
        since: str = "",
        until: str = "",
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[dict], int]:
        """Rows newest first that match every filter given, and how many match in all.

        ``user`` and ``action`` match exactly, ``target`` anywhere in the target; ``since``
        (inclusive) and ``until`` (exclusive) are UTC timestamps as stored.
        """
        where, args = [], []
        for column, value in (("user", user), ("action", action)):
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        if target:
            where.append("instr(target, ?) > 0")
            args.append(target)
        if since:
            where.append("time >= ?")
            args.append(since)
        if until:
            where.append("time < ?")
            args.append(until)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        with self.db.transaction() as conn:
            total = conn.execute(f"SELECT count(*) FROM audit{clause}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM audit{clause} ORDER BY time DESC, id DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
        return [dict(zip(FIELDS, r)) for r in rows], total

    def actions(self) -> list[str]:
        """Every action recorded, for the filter's choices."""
        with self.db.transaction() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT action FROM audit ORDER BY action")]
