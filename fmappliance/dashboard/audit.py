"""The audit log: one SQLite row and one JSON log line per event.

Fields: UTC time, user, real client address, action, target, result, job id.  Control
characters in any field are escaped (``\\x1b``), so a crafted name cannot forge log
lines or terminal escapes.
"""

from __future__ import annotations

import json
import logging
import re
import time

from fmappliance.names import format_timestamp

audit_log = logging.getLogger("fmappliance.audit")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
FIELDS = ("time", "user", "address", "action", "target", "result", "job_id")


def escape_control(value) -> str:
    if value is None:
        return ""
    text = str(value)[:1000]
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text
    )


class AuditLog:
    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock
        with self.db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS audit ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, user TEXT NOT NULL,"
                " address TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,"
                " result TEXT NOT NULL, job_id TEXT NOT NULL)"
            )

    def record(self, *, user, address, action, target="", result="ok", job_id=None) -> dict:
        """Store one event and log it as a JSON line; returns the stored row."""
        row = {
            "time": format_timestamp(self.clock()),
            "user": escape_control(user),
            "address": escape_control(address),
            "action": escape_control(action),
            "target": escape_control(target),
            "result": escape_control(result),
            "job_id": escape_control(job_id),
        }
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO audit (time, user, address, action, target, result, job_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                tuple(row[f] for f in FIELDS),
            )
        audit_log.info(json.dumps(row, ensure_ascii=True, sort_keys=True))
        return row

    def recent(self, limit: int = 200, offset: int = 0) -> list[dict]:
        with self.db.transaction() as conn:
            rows = conn.execute(
                "SELECT time, user, address, action, target, result, job_id FROM audit ORDER BY id DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
        return [dict(zip(FIELDS, r)) for r in rows]
