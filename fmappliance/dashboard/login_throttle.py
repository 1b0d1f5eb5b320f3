"""Login throttling: growing delays after repeated failures.

Three counters, each with its own growing delay:

- per (account, address): one client guessing one account's password or codes;
- per address: one client spraying many accounts;
- per account: many addresses guessing one account.  This one only slows down addresses
  that have failed themselves: a correct password from a clean address always gets in,
  so nobody can lock an account out by failing on purpose from elsewhere.

Both sign-in steps (password and second-factor code) count here.  The address is
``environ['REMOTE_ADDR']``; waitress rewrites it from X-Forwarded-For only when the request
came from ``dashboard.trusted_proxy`` (docs/pitfalls.md: never parse the header ourselves).
State is in memory: a restart forgets it, which is acceptable for a delay, not a lock.
"""

from __future__ import annotations

import math
import threading
import time

FREE_FAILURES = 5
FIRST_DELAY_SECONDS = 15
MAX_DELAY_SECONDS = 15 * 60
FORGET_AFTER_SECONDS = 60 * 60
MAX_ENTRIES = 10_000


class LoginThrottle:
    def __init__(self, clock=time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._entries: dict[tuple, tuple[int, float]] = {}  # key -> (failures, last failure)

    @staticmethod
    def _delay(failures: int) -> float:
        if failures < FREE_FAILURES:
            return 0.0
        return min(FIRST_DELAY_SECONDS * 2 ** (failures - FREE_FAILURES), MAX_DELAY_SECONDS)

    @staticmethod
    def _keys(username: str, address: str):
        user, addr = username.lower()[:128], address or "?"
        return ("pair", user, addr), ("addr", addr), ("user", user)

    def _wait(self, key, now: float) -> float:
        failures, last = self._entries.get(key, (0, 0.0))
        if now - last > FORGET_AFTER_SECONDS:
            return 0.0
        return last + self._delay(failures) - now

    def _failures(self, key, now: float) -> int:
        failures, last = self._entries.get(key, (0, 0.0))
        return 0 if now - last > FORGET_AFTER_SECONDS else failures

    def retry_after(self, username: str, address: str) -> int:
        """Seconds the caller must wait before trying again (0: go ahead)."""
        now = self.clock()
        pair, addr, user = self._keys(username, address)
        with self._lock:
            wait = max(self._wait(pair, now), self._wait(addr, now))
            if self._failures(addr, now):
                # The account-wide delay applies only to addresses with failures of their own.
                wait = max(wait, self._wait(user, now))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._prune(now)
            for key in self._keys(username, address):
                self._entries[key] = (self._failures(key, now) + 1, now)

    def succeeded(self, username: str, address: str) -> None:
        """A full sign-in: forget this (account, address)'s failures.

        The address and account counts stay: signing in to one's own account must not
        reset a spray over other accounts from the same address.
        """
        pair, _, _ = self._keys(username, address)
        with self._lock:
            self._entries.pop(pair, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, last) in self._entries.items() if now - last > FORGET_AFTER_SECONDS]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= MAX_ENTRIES:
            # Still full (an attack with many names): drop the oldest half rather than grow.
            for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][1])[: MAX_ENTRIES // 2]:
                del self._entries[key]
