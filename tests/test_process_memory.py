"""TrimWhenIdle: the heap is trimmed when the last request in flight is done, never during a burst
more than once per interval, and the response passes through untouched (close() included)."""

from __future__ import annotations

import threading
import time

import pytest

from fmappliance.process_memory import TrimWhenIdle


class Body:
    def __init__(self, chunks):
        self.chunks = chunks
        self.closed = False

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        self.closed = True


def make(interval=60.0, fail=False):
    trims: list[float] = []
    bodies: list[Body] = []

    def app(environ, start_response):
        if fail:
            raise RuntimeError("boom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Body([b"a", b"b"]))
        return bodies[-1]

    return TrimWhenIdle(app, interval=interval, trim=lambda: trims.append(time.monotonic())), trims, bodies


def request(wrapped):
    result = wrapped({}, lambda status, headers: None)
    return result, b"".join(result)


def test_the_last_request_done_trims_once_and_the_body_passes_through():
    wrapped, trims, bodies = make()
    first, body = request(wrapped)
    second, _ = request(wrapped)
    assert body == b"ab"
    first.close()
    assert trims == []  # the second is still in flight
    second.close()
    assert len(trims) == 1
    assert bodies[0].closed and bodies[1].closed


def test_idle_again_within_the_interval_trims_once_more_at_its_end():
    wrapped, trims, _ = make(interval=0.2)
    for _ in range(3):
        result, _ = request(wrapped)
        result.close()
    assert len(trims) == 1  # the first; the next two only arm one timer
    deadline = time.monotonic() + 5
    while len(trims) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(trims) == 2
    assert trims[1] - trims[0] >= 0.2 - 0.01
    time.sleep(0.3)
    assert len(trims) == 2


def test_busy_when_the_timer_fires_leaves_the_trim_to_the_last_request():
    wrapped, trims, _ = make(interval=0.1)
    result, _ = request(wrapped)
    result.close()
    result, _ = request(wrapped)
    result.close()  # arms the timer
    busy, _ = request(wrapped)  # in flight while the timer fires
    time.sleep(0.3)
    assert len(trims) == 1
    busy.close()
    assert len(trims) == 2


def test_an_application_error_does_not_leave_a_request_counted():
    wrapped, trims, _ = make(fail=True)
    with pytest.raises(RuntimeError):
        wrapped({}, lambda status, headers: None)
    assert len(trims) == 1


def test_concurrent_requests_trim_only_when_all_are_done():
    wrapped, trims, _ = make()
    results = [request(wrapped)[0] for _ in range(8)]
    threads = [threading.Thread(target=r.close) for r in results[:-1]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert trims == []
    results[-1].close()
    assert len(trims) == 1


def test_a_sized_response_keeps_its_length_for_the_server():
    wrapped = TrimWhenIdle(lambda environ, start_response: [b"one chunk"], trim=lambda: None)
    result = wrapped({}, lambda status, headers: None)
    assert len(result) == 1
    assert list(result) == [b"one chunk"]
    result.close()
