"""Server-side sessions in SQLite behind an opaque cookie.

The cookie carries ``secrets.token_urlsafe(32)``; the table stores only its sha256, so
a leaked database copy does not hand out live sessions.  A session ends after
``session_idle_minutes`` without requests or ``session_max_hours`` after login,
whichever comes first.  Each session has its own CSRF token and a small flash list
(notices shown on the next page after a plain form post).

Live sessions are also kept in memory (this process is the only writer), so a page view
costs a dict lookup rather than a database round trip; the table stays the truth across
restarts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field

COOKIE_NAME = "fmsession"
# last_seen is written at most this often: the idle timeout counts in minutes, and a
# write per page view would make every request a disk write.
TOUCH_INTERVAL_SECONDS = 15


def _digest(raw_id: str) -> str:
    return hashlib.sha256(raw_id.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    id_hash: str
    user: str
    csrf_token: str
    created: float
    last_seen: float
    flash: list = field(default_factory=list)


class SessionStore:
    def __init__(self, db, idle_seconds: float, max_seconds: float, clock=time.time):
        self.db = db
        self.idle_seconds = idle_seconds
        self.max_seconds = max_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, Session] = {}
        with self.db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS sessions ("
                " id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf_token TEXT NOT NULL,"
                " created REAL NOT NULL, last_seen REAL NOT NULL, flash TEXT NOT NULL DEFAULT '[]')"
            )
        self.purge_expired()

    def create(self, user: str) -> tuple[str, Session]:
        """A new session for ``user``: returns the raw cookie value and the session."""
        raw_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(_digest(raw_id), user, secrets.token_urlsafe(32), now, now)
        self.purge_expired()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (id_hash, user, csrf_token, created, last_seen) VALUES (?, ?, ?, ?, ?)",
                (session.id_hash, user, session.csrf_token, now, now),
            )
        with self._lock:
            self._cache[session.id_hash] = dataclasses.replace(session)
        return raw_id, session

    def load(self, raw_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (expired ones are deleted)."""
        if not raw_id or len(raw_id) > 200:
            return None
        id_hash = _digest(raw_id)
        now = self.clock()
        with self._lock:
            cached = self._cache.get(id_hash)
        if cached is None:
            cached = self._read(id_hash)
            if cached is None:
                return None
        if now - cached.last_seen > self.idle_seconds or now - cached.created > self.max_seconds:
            self.destroy(cached)
            return None
        if now - cached.last_seen >= TOUCH_INTERVAL_SECONDS:
            with self.db.transaction() as conn:
                conn.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash))
            cached.last_seen = now
        with self._lock:
            self._cache[id_hash] = cached
        # A copy: concurrent requests of one session must not share a mutable object.
        return dataclasses.replace(cached, flash=list(cached.flash))

    def _read(self, id_hash: str) -> Session | None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT user, csrf_token, created, last_seen, flash FROM sessions WHERE id_hash = ?", (id_hash,)
            ).fetchone()
        if row is None:
            return None
        user, csrf_token, created, last_seen, flash = row
        return Session(id_hash, user, csrf_token, created, last_seen, json.loads(flash))

    def destroy(self, session: Session) -> None:
        with self._lock:
            self._cache.pop(session.id_hash, None)
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (session.id_hash,))

    def add_flash(self, session: Session, kind: str, text: str) -> None:
        """Keep a notice for the next page of this session (plain form posts)."""
        session.flash = (session.flash + [[kind, text]])[-5:]
        self._store_flash(session)

    def pop_flash(self, session: Session) -> list:
        if not session.flash:
            return []
        notices, session.flash = session.flash, []
        self._store_flash(session)
        return notices

    def _store_flash(self, session: Session) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE sessions SET flash = ? WHERE id_hash = ?", (json.dumps(session.flash), session.id_hash)
            )
        with self._lock:
            cached = self._cache.get(session.id_hash)
            if cached is not None:
                cached.flash = list(session.flash)

    def purge_expired(self) -> None:
        now = self.clock()
        with self._lock:
            for id_hash, cached in list(self._cache.items()):
                if now - cached.last_seen > self.idle_seconds or now - cached.created > self.max_seconds:
                    del self._cache[id_hash]
        with self.db.transaction() as conn:
            conn.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created < ?",
                (now - self.idle_seconds, now - self.max_seconds),
            )


def cookie_is_secure(mode: str, environ: dict) -> bool:
    """Secure flag per ``dashboard.secure_cookies``: auto follows the request's scheme.

    waitress sets ``wsgi.url_scheme`` from X-Forwarded-Proto only for the trusted proxy.
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    return environ.get("wsgi.url_scheme") == "https"


def cookie_value(environ: dict, name: str) -> str | None:
    """One cookie's value from the request.

    Our cookies hold url-safe tokens only, so a plain split is enough; it is also
    several times faster than http.cookies on every page view.
    """
    for part in environ.get("HTTP_COOKIE", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip('"')
    return None


def set_cookie(response, name: str, value: str, *, secure: bool, path: str = "/", max_age: int | None = None) -> None:
    """Set a cookie with the flags every dashboard cookie carries."""
    kwargs = {"path": path, "httponly": True, "samesite": "Strict", "secure": secure}
    if max_age is not None:
        kwargs["max_age"] = max_age
    response.set_cookie(name, value, **kwargs)


def delete_cookie(response, name: str, *, secure: bool, path: str = "/") -> None:
    set_cookie(response, name, "", secure=secure, path=path, max_age=0)
