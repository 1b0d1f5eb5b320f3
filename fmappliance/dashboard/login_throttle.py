"""Login throttling: growing delays after repeated failures.

Four counters, each with its own growing delay:

- per (account, address): one client guessing one account's password or codes;
- per address: one client spraying many accounts;
- per account: many addresses guessing one account.  This one only slows down an address
  whose (account, address) pair has failed itself: a correct password from a clean address
  always gets in, so nobody can lock an account out by failing on purpose from elsewhere,
  and a typo for another account behind the same office NAT does not count (issue 21.11);
- per account, second step only: wrong codes (sign-in code step, step-up confirmation)
  whatever the address.  Only someone who knows the password reaches that step, so a fresh
  address per guess must not buy fresh guesses at the 10^6 codes (issue 21.3).

Both sign-in steps (password and second-factor code) count here.  The address is
``environ['REMOTE_ADDR']``; waitress rewrites it from X-Forwarded-For only when the request
came from ``dashboard.trusted_proxy`` (docs/pitfalls.md: never parse the header ourselves).
An IPv6 address counts as its /64: one host usually holds a whole /64, so each of its
addresses must not be a fresh client.
State is in memory: a restart forgets it, which is acceptable for a delay, not a lock.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time

FREE_FAILURES = 5
FIRST_DELAY_SECONDS = 15
MAX_DELAY_SECONDS = 15 * 60
FORGET_AFTER_SECONDS = 60 * 60
MAX_ENTRIES = 10_000


def client_key(address: str) -> str:
    """The throttle's name for a client address: an IPv6 address stands for its /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "?"
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


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
        user, addr = username.lower()[:128], client_key(address)
        return ("pair", user, addr), ("addr", addr), ("user", user)

    @staticmethod
    def _code_key(username: str):
        return ("code", username.lower()[:128])

    def _wait(self, key, now: float) -> float:
        failures, last = self._entries.get(key, (0, 0.0))
        if now - last > FORGET_AFTER_SECONDS:
            return 0.0
        return last + self._delay(failures) - now

    def _failures(self, key, now: float) -> int:
        failures, last = self._entries.get(key, (0, 0.0))
        return 0 if now - last > FORGET_AFTER_SECONDS else failures

    def retry_after(self, username: str, address: str, *, second_step: bool = False) -> int:
        """Seconds the caller must wait before trying again (0: go ahead).

        ``second_step``: a code (sign-in's second step, step-up), where the account's wrong
        codes count from every address.
        """
        now = self.clock()
        pair, addr, user = self._keys(username, address)
        with self._lock:
            wait = max(self._wait(pair, now), self._wait(addr, now))
            if self._failures(pair, now):
                # The account-wide delay applies only to this pair's own failures: another
                # account's typo from the same (shared) address does not count.
                wait = max(wait, self._wait(user, now))
            if second_step:
                wait = max(wait, self._wait(self._code_key(username), now))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str, *, second_step: bool = False) -> None:
        now = self.clock()
        keys = list(self._keys(username, address))
        if second_step:
            keys.append(self._code_key(username))
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._prune(now)
            for key in keys:
                self._entries[key] = (self._failures(key, now) + 1, now)

    def succeeded(self, username: str, address: str, *, second_step: bool = False) -> None:
        """A full sign-in (or a confirmed code): forget this (account, address)'s failures.

        The address and account counts stay: signing in to one's own account must not
        reset a spray over other accounts from the same address.  A right code
        (``second_step``) also forgets the account's wrong codes: its owner is back.
        """
        pair, _, _ = self._keys(username, address)
        with self._lock:
            self._entries.pop(pair, None)
            if second_step:
                self._entries.pop(self._code_key(username), None)

    def _prune(self, now: float) -> None:
        stale = [k for k, (_, last) in self._entries.items() if now - last > FORGET_AFTER_SECONDS]
        for key in stale:
            del self._entries[key]
        if len(self._entries) >= MAX_ENTRIES:
            # Still full (an attack with many names): drop the oldest half rather than grow.
            for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][1])[: MAX_ENTRIES // 2]:
                del self._entries[key]
