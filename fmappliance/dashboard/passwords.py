"""Password checks against the bcrypt hashes of ``dashboard.credentials``.

bcrypt only looks at the first 72 bytes and bcrypt 5 raises ValueError beyond that
(docs/pitfalls.md).  Our rule: passwords longer than 72 bytes are refused with a clear
message, at login and in ``hash-password``, never silently truncated.

bcrypt is loaded by the first sign-in (or ``hash-password``), not at start: with its library it
is about 0.9 MB of resident memory a dashboard nobody signs in to does not need.
"""

from __future__ import annotations

import hmac
import re
import threading

MAX_PASSWORD_BYTES = 72
TOO_LONG_MESSAGE = "Passwords are limited to 72 bytes by bcrypt; use a shorter one."
WRONG_CREDENTIALS_MESSAGE = "Wrong user name or password."
PRODUCTION_COST = 12


class PasswordTooLong(ValueError):
    """The password exceeds bcrypt's 72-byte limit."""


def password_bytes(password: str) -> bytes:
    data = password.encode("utf-8")
    if len(data) > MAX_PASSWORD_BYTES:
        raise PasswordTooLong(TOO_LONG_MESSAGE)
    return data


def hash_password(password: str, cost: int = PRODUCTION_COST) -> str:
    """The bcrypt hash to put in ``dashboard.credentials``; raises PasswordTooLong."""
    if not password:
        raise ValueError("An empty password cannot be used.")
    import bcrypt

    return bcrypt.hashpw(password_bytes(password), bcrypt.gensalt(cost)).decode("ascii")


class PasswordChecker:
    """Checks user/password pairs; unknown users cost the same time as known ones."""

    def __init__(self, credentials: dict[str, str]):
        self.credentials = dict(credentials or {})
        # The dummy hash has the cost of the real ones, so both paths run the same work.
        costs = [int(m.group(1)) for h in self.credentials.values() if (m := re.match(r"^\$2[aby]\$(\d\d)\$", h))]
        self._dummy_cost = max(costs) if costs else PRODUCTION_COST
        self._dummy: bytes | None = None
        self._dummy_lock = threading.Lock()

    def _dummy_hash(self) -> bytes:
        """Made at the first check, whatever the user: no check ever skips the work."""
        import bcrypt

        with self._dummy_lock:
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"dummy password never used", bcrypt.gensalt(self._dummy_cost))
            return self._dummy

    def check(self, username: str, password: str) -> bool:
        """True when the pair is valid; raises PasswordTooLong before any work."""
        import bcrypt

        secret = password_bytes(password)
        dummy = self._dummy_hash()
        known = None
        for name, hashed in self.credentials.items():
            # Compare names in constant time too; keep the loop going for every entry.
            if hmac.compare_digest(name.encode("utf-8"), username.encode("utf-8")):
                known = hashed
        stored = known.encode("ascii") if known else dummy
        try:
            ok = bcrypt.checkpw(secret, stored)
        except ValueError:
            ok = False
        return ok and known is not None
