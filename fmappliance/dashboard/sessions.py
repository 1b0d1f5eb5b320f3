"""Server-side sessions in SQLite behind an opaque cookie.

The cookie carries ``secrets.token_urlsafe(32)``; the table stores only its sha256, so
a leaked database copy does not hand out live sessions.  A session ends after
``session_idle_minutes`` without requests or ``session_max_hours`` after login,
whichever comes first.  Each session has its own CSRF token and a small flash list
(notices shown on the next page after a plain form post).

A session also carries a fingerprint of its user's password hash (a changed or removed
user ends it: the caller compares), its stage (``full``, or ``enroll`` while a user who
must set up a second factor can do nothing else) and when its user last proved a factor
(``verified_at``, for step-up confirmation of destructive actions).

Live sessions are also kept in memory, so a page view costs a dict lookup rather than a
database round trip; the table stays the truth across restarts.  Another process (the
``reset-2fa`` command) may delete rows: SQLite's ``data_version`` tells us, and the memory
copy is dropped.
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
# Browsers accept a __Host- cookie only with Secure, Path=/ and no Domain: no sibling
# subdomain (or plain-http page) can set or shadow it.
SECURE_COOKIE_NAME = "__Host-fmsession"
STAGE_FULL = "full"
STAGE_ENROLL = "enroll"
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
    fingerprint: str = ""
    stage: str = STAGE_FULL
    verified_at: float = 0.0


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
            columns = {row[1] for row in conn.execute("PRAGMA table_info(sessions)")}
            # Sessions of older versions have no fingerprint: they end at their next request.
            for name, ddl in (
                ("fingerprint", "TEXT NOT NULL DEFAULT ''"),
                ("stage", "TEXT NOT NULL DEFAULT 'full'"),
                ("verified_at", "REAL NOT NULL DEFAULT 0"),
            ):
                if name not in columns:
                    conn.execute(f"ALTER TABLE sessions ADD COLUMN {name} {ddl}")
        self._data_version = self.db.data_version()
        self.purge_expired()

    def create(self, user: str, *, fingerprint: str, stage: str = STAGE_FULL) -> tuple[str, Session]:
        """A new session for ``user``: returns the raw cookie value and the session."""
        raw_id = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(_digest(raw_id), user, secrets.token_urlsafe(32), now, now, [], fingerprint, stage, now)
        self.purge_expired()
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO sessions (id_hash, user, csrf_token, created, last_seen, fingerprint, stage, verified_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session.id_hash, user, session.csrf_token, now, now, fingerprint, stage, now),
            )
        with self._lock:
            self._cache[session.id_hash] = dataclasses.replace(session)
        return raw_id, session

    def update(self, session: Session, *, stage: str | None = None, verified_at: float | None = None) -> None:
        """Move a session on (enrollment done) or note a freshly proved factor."""
        if stage is not None:
            session.stage = stage
        if verified_at is not None:
            session.verified_at = verified_at
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE sessions SET stage = ?, verified_at = ? WHERE id_hash = ?",
                (session.stage, session.verified_at, session.id_hash),
            )
        with self._lock:
            cached = self._cache.get(session.id_hash)
            if cached is not None:
                cached.stage, cached.verified_at = session.stage, session.verified_at

    def destroy_user(self, user: str) -> int:
        """End every session of ``user`` (second factor reset); returns how many."""
        with self._lock:
            for id_hash, cached in list(self._cache.items()):
                if cached.user == user:
                    del self._cache[id_hash]
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE user = ?", (user,)).rowcount

    def _forget_if_changed_elsewhere(self) -> None:
        version = self.db.data_version()
        if version != self._data_version:
            with self._lock:
                self._cache.clear()
            self._data_version = version

    def _lookup(self, id_hash: str) -> Session | None:
        """The session with this hash from the cache or the database, expired or not."""
        self._forget_if_changed_elsewhere()
        with self._lock:
            cached = self._cache.get(id_hash)
        return cached if cached is not None else self._read(id_hash)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self.idle_seconds or now - session.created > self.max_seconds

    def load(self, raw_id: str | None) -> Session | None:
        """The live session for a cookie value, or None (expired ones are deleted)."""
        if not raw_id or len(raw_id) > 200:
            return None
        id_hash = _digest(raw_id)
        now = self.clock()
        cached = self._lookup(id_hash)
        if cached is None:
            return None
        if self._expired(cached, now):
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

    def peek(self, id_hash: str) -> Session | None:
        """The live session with this hash, or None; unlike :meth:`load` it does not count as activity.

        For re-checking a long request (a followed log): the stream itself must not keep its
        session from going idle.
        """
        cached = self._lookup(id_hash)
        if cached is None or self._expired(cached, self.clock()):
            return None
        return dataclasses.replace(cached, flash=list(cached.flash))

    def _read(self, id_hash: str) -> Session | None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT user, csrf_token, created, last_seen, flash, fingerprint, stage, verified_at FROM sessions WHERE id_hash = ?",
                (id_hash,),
            ).fetchone()
        if row is None:
            return None
        user, csrf_token, created, last_seen, flash, fingerprint, stage, verified_at = row
        return Session(
            id_hash, user, csrf_token, created, last_seen, json.loads(flash), fingerprint, stage, verified_at
        )

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


def session_cookie_name(secure: bool) -> str:
    return SECURE_COOKIE_NAME if secure else COOKIE_NAME


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
