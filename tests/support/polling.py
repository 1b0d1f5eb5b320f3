"""Waiting for something another thread or process does, without fixed sleeps."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str = "the condition", interval: float = 0.05):
    """Call ``predicate`` until it returns something truthy (returned); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
