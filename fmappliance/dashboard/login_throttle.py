"""Login throttling: growing delays after repeated failures, per account and per address.

The address is ``environ['REMOTE_ADDR']``; waitress rewrites it from X-Forwarded-For only
when the request came from ``dashboard.trusted_proxy`` (docs/pitfalls.md: never parse the
header ourselves).  Both keys count separately, so spraying many accounts from one
address and attacking one account from many addresses are both slowed down.
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
        self._entries: dict[tuple[str, str], tuple[int, float]] = {}  # key -> (failures, last failure)

    @staticmethod
    def _delay(failures: int) -> float:
        if failures < FREE_FAILURES:
            return 0.0
        return min(FIRST_DELAY_SECONDS * 2 ** (failures - FREE_FAILURES), MAX_DELAY_SECONDS)

    def _keys(self, username: str, address: str):
        return (("user", username.lower()[:128]), ("addr", address or "?"))

    def retry_after(self, username: str, address: str) -> int:
        """Seconds the caller must wait before trying again (0: go ahead)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in self._keys(username, address):
                failures, last = self._entries.get(key, (0, 0.0))
                if now - last > FORGET_AFTER_SECONDS:
                    continue
                wait = max(wait, last + self._delay(failures) - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._prune(now)
            for key in self._keys(username, address):
                failures, last = self._entries.get(key, (0, 0.0))
                if now - last > FORGET_AFTER_SECONDS:
                    failures = 0
                self._entries[key] = (failures + 1, now)

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            for key in self._keys(username, address):
                self._entries.pop(key, None)

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, last) in self._entries.items() if now - last > FORGET_AFTER_SECONDS]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= MAX_ENTRIES:
            # Still full (an attack with many names): drop the oldest half rather than grow.
            for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][1])[: MAX_ENTRIES // 2]:
                del self._entries[key]
