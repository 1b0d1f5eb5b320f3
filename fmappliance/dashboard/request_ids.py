"""The id of the dashboard request being served, sent to agents as ``X-FM-Request``.

One id per dashboard request (set before its route runs), so the dashboard's audit row and the
server's ``fleet-audit.jsonl`` line of the same action carry the same ``request_id``.  Kept per
thread: waitress serves each request on one thread, streams included.
"""

from __future__ import annotations

import re
import secrets
import threading

HEADER = "X-FM-Request"
_current = threading.local()
_VALID = re.compile(r"[0-9a-f]{16}")


def start() -> str:
    """A new id for the request this thread now serves."""
    _current.value = secrets.token_hex(8)
    return _current.value


def current() -> str:
    """This thread's request id ("" outside a request: a background job sends a fresh one)."""
    return getattr(_current, "value", "")


def for_agent() -> str:
    """The id to send: the request's, or a fresh one for the dashboard's own calls (scheduler)."""
    value = current()
    return value if _VALID.fullmatch(value) else secrets.token_hex(8)
