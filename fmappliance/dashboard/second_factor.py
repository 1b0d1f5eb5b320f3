"""TOTP second factors (RFC 6238: 30 s, 6 digits, SHA-1) and recovery codes, in the state DB.

pyotp computes the codes; we only decide which time steps count (the current one and one
either side, for clock skew), compare in constant time, and remember the last step used:
a code is accepted once, a replay (or an older code) is refused.  The update of the last
step is a conditional UPDATE, so two requests racing with one code cannot both pass.

Recovery codes are random (60 bits each), shown once, stored only as salted SHA-256
(their entropy makes a slow hash unnecessary), and each works once.

The table lives in the dashboard's SQLite file (mode 0600, state_db.py).  Secrets never
reach a log line or the audit log.  Every check reads the table, so a reset made by
another process (``fm-dashboard reset-2fa``) counts at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

ISSUER = "fmappliance"
STEP_SECONDS = 30
DIGITS = 6
SKEW_STEPS = 1
RECOVERY_CODES = 10
#: A pending (not yet confirmed) secret is kept this long, so a reload shows the same QR code.
#: It belongs to the session that asked for it: another session of the user (someone else
#: who knows the password) neither sees it nor can confirm it (issue 21.6).
PENDING_SECONDS = 15 * 60
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i to misread


@dataclass(frozen=True)
class Enrollment:
    user: str
    enrolled: float
    recovery_left: int


def normalise_code(text: str) -> str:
    """What the user typed, without spaces and dashes, lower case."""
    return "".join(ch for ch in (text or "") if ch not in " -\t").lower()[:64]


def is_totp_code(text: str) -> bool:
    return len(text) == DIGITS and text.isdigit()


def provisioning_uri(secret: str, user: str) -> str:
    import pyotp  # pyotp loads with the first second-factor use (memory at rest)

    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=ISSUER)


def _hash_recovery(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code is ``code`` (current ± skew), or None."""
    import pyotp

    totp = pyotp.TOTP(secret)
    current = int(now // STEP_SECONDS)
    found = None
    for step in range(current - SKEW_STEPS, current + SKEW_STEPS + 1):
        # Every candidate is compared (constant time, no early exit).
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            found = step
    return found


class SecondFactors:
    def __init__(self, db, clock=time.time):
        self.db = db
        self.clock = clock
        with self.db.transaction() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS second_factors ("
                " user TEXT PRIMARY KEY, secret TEXT NOT NULL, last_step INTEGER NOT NULL,"
                " recovery_salt TEXT NOT NULL, recovery TEXT NOT NULL, enrolled REAL NOT NULL)"
            )
            # Pending secrets were once per user (shared by all its sessions); they live minutes,
            # so the old table is dropped rather than migrated.
            conn.execute("DROP TABLE IF EXISTS second_factor_pending")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS second_factor_enrolling (user TEXT NOT NULL, session TEXT NOT NULL,"
                " secret TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (user, session))"
            )

    # -- state --------------------------------------------------------------------------

    def enrollment(self, user: str) -> Enrollment | None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT enrolled, recovery FROM second_factors WHERE user = ?", (user,)).fetchone()
        if row is None:
            return None
        return Enrollment(user, row[0], len(json.loads(row[1])))

    def enrolled_users(self) -> dict[str, Enrollment]:
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT user, enrolled, recovery FROM second_factors").fetchall()
        return {user: Enrollment(user, enrolled, len(json.loads(recovery))) for user, enrolled, recovery in rows}

    # -- enrollment ---------------------------------------------------------------------

    def pending_secret(self, user: str, session: str) -> str:
        """The secret ``session`` is setting up for ``user`` (a new one, or the one shown a moment ago)."""
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM second_factor_enrolling WHERE created <= ?", (now - PENDING_SECONDS,))
            row = conn.execute(
                "SELECT secret FROM second_factor_enrolling WHERE user = ? AND session = ?", (user, session)
            ).fetchone()
            if row:
                return row[0]
            import pyotp

            secret = pyotp.random_base32()
            conn.execute(
                "INSERT INTO second_factor_enrolling (user, session, secret, created) VALUES (?, ?, ?, ?)",
                (user, session, secret, now),
            )
        return secret

    def confirm(self, user: str, code: str, session: str) -> list[str] | None:
        """Finish ``session``'s enrollment with a code from the app: the recovery codes (to show once), or None."""
        code = normalise_code(code)
        now = self.clock()
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT secret, created FROM second_factor_enrolling WHERE user = ? AND session = ?", (user, session)
            ).fetchone()
            if row is None or now - row[1] >= PENDING_SECONDS or not is_totp_code(code):
                return None
            step = matching_step(row[0], code, now)
            if step is None:
                return None
            codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
            salt = secrets.token_hex(16)
            hashes = [_hash_recovery(salt, normalise_code(c)) for c in codes]
            conn.execute(
                "INSERT OR REPLACE INTO second_factors (user, secret, last_step, recovery_salt, recovery, enrolled) VALUES (?, ?, ?, ?, ?, ?)",
                (user, row[0], step, salt, json.dumps(hashes), now),
            )
            conn.execute("DELETE FROM second_factor_enrolling WHERE user = ?", (user,))
        return codes

    def reset(self, user: str) -> bool:
        """Forget ``user``'s second factor (they enroll again at next sign-in); True if there was one."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM second_factor_enrolling WHERE user = ?", (user,))
            return conn.execute("DELETE FROM second_factors WHERE user = ?", (user,)).rowcount > 0

    # -- sign-in ------------------------------------------------------------------------

    def verify(self, user: str, text: str) -> str | None:
        """Check a 6-digit code or a recovery code: "code", "recovery" or None (wrong, replayed, used)."""
        code = normalise_code(text)
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT secret, last_step, recovery_salt, recovery FROM second_factors WHERE user = ?", (user,)
            ).fetchone()
            if row is None or not code:
                return None
            secret, last_step, salt, recovery = row
            if is_totp_code(code):
                step = matching_step(secret, code, self.clock())
                if step is None or step <= last_step:
                    return None
                # Conditional: of two requests racing with one code, only one moves the step on.
                moved = conn.execute(
                    "UPDATE second_factors SET last_step = ? WHERE user = ? AND last_step < ?", (step, user, step)
                ).rowcount
                return "code" if moved else None
            hashes = json.loads(recovery)
            wanted = _hash_recovery(salt, code)
            match = None
            for stored in hashes:
                if hmac.compare_digest(stored, wanted):
                    match = stored
            if match is None:
                return None
            hashes.remove(match)
            conn.execute("UPDATE second_factors SET recovery = ? WHERE user = ?", (json.dumps(hashes), user))
            return "recovery"
