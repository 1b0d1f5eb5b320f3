"""The one background loop of the agent's and the dashboard's services: timing, wake, stop, a failing tick."""

from __future__ import annotations

import logging
import threading
import time

from fmappliance.background_loop import BackgroundLoop


class Ticks:
    def __init__(self, fail_first: int = 0):
        self.count = 0
        self.fail_first = fail_first
        self.seen = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.seen.set()
        if self.count <= self.fail_first:
            raise RuntimeError("secret-free failure")


def test_the_first_tick_runs_at_once_and_stop_ends_a_long_wait_at_once():
    ticks = Ticks()
    loop = BackgroundLoop("t-immediate", ticks, 3600.0)
    loop.start()
    assert ticks.seen.wait(2)
    started = time.monotonic()
    loop.stop()
    assert time.monotonic() - started < 1  # not the hour of the interval
    assert loop.thread is None and ticks.count == 1


def test_a_first_delay_holds_the_first_tick_back():
    ticks = Ticks()
    loop = BackgroundLoop("t-delayed", ticks, 3600.0, first_delay=3600.0)
    loop.start()
    time.sleep(0.2)
    loop.stop()
    assert ticks.count == 0


def test_wake_runs_the_next_tick_now():
    ticks = Ticks()
    loop = BackgroundLoop("t-wake", ticks, 3600.0)
    loop.start()
    try:
        assert ticks.seen.wait(2)
        ticks.seen.clear()
        loop.wake()
        assert ticks.seen.wait(2) and ticks.count == 2
    finally:
        loop.stop()


def test_a_failing_tick_is_logged_with_the_callers_logger_and_the_loop_goes_on(caplog):
    ticks = Ticks(fail_first=2)
    loop = BackgroundLoop(
        "t-fail", ticks, lambda: 0.01, logger=logging.getLogger("fmappliance.test_owner"), failure="The round failed."
    )
    with caplog.at_level(logging.ERROR):
        loop.start()
        deadline = time.monotonic() + 5
        while ticks.count < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        loop.stop()
    assert ticks.count >= 4
    failures = [r for r in caplog.records if r.name == "fmappliance.test_owner"]
    assert [r.getMessage() for r in failures] == ["The round failed.", "The round failed."]
    assert all(r.exc_info for r in failures)


def test_a_restart_after_stop_runs_again():
    ticks = Ticks()
    loop = BackgroundLoop("t-restart", ticks, 3600.0)
    loop.start()
    assert ticks.seen.wait(2)
    loop.stop()
    ticks.seen.clear()
    loop.start()
    try:
        assert ticks.seen.wait(2) and ticks.count == 2
    finally:
        loop.stop()
