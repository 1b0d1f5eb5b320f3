"""Keeping a long-running service's resident memory small (glibc malloc tuning).

Both services are mostly idle, GIL-bound and start up by importing and parsing far more than
they keep (YAML config, module source, zipapp bootstrap).  glibc keeps freed memory and
per-thread arenas mapped unless told otherwise; these calls tell it.  All are no-ops off
glibc (musl has neither).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable

_M_ARENA_MAX = -8  # from malloc.h

_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None and sys.platform.startswith("linux"):
        try:
            import ctypes

            _libc_handle = ctypes.CDLL("libc.so.6")
        except OSError:
            pass
    return _libc_handle


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (default up to 8 per core).

    With dozens of request threads the extra arenas hold several MB of freed memory; a
    GIL-bound process gains nothing from them.  MALLOC_ARENA_MAX, when set, wins.
    """
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc.mallopt(_M_ARENA_MAX, arenas)
    except AttributeError:
        pass


def trim_heap() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim)."""
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass


def release_freed_memory() -> None:
    """After start-up: collect garbage and hand free heap pages back to the kernel."""
    gc.collect()
    trim_heap()


class TrimWhenIdle:
    """WSGI middleware: once no request is in flight, trim the heap (at most once per ``interval`` s).

    A burst of requests (16 browsers on a 150-site dashboard: a few hundred KB of page per
    request in flight) leaves MBs of freed memory in glibc's heap, which it keeps, scattered
    between live objects, for good.  Trimming when the burst is over gives it back.  A busy
    server is rarely idle, so the cost (about a millisecond, and page faults when the memory is
    used again) stays off the busy path; when the server goes idle sooner than ``interval``
    after the last trim, a timer trims at the end of the interval if it is still idle.  Runs
    in the worker thread after its response is complete: the client is not kept waiting.
    """

    def __init__(
        self,
        app,
        interval: float = 0.2,
        trim: Callable[[], None] = trim_heap,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.app = app
        self.interval = interval
        self._trim = trim
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._last_trim = float("-inf")
        self._timer: threading.Timer | None = None

    def __call__(self, environ, start_response):
        with self._lock:
            self._in_flight += 1
        try:
            result = self.app(environ, start_response)
        except BaseException:
            self._finished()
            raise
        if hasattr(result, "__len__"):  # waitress sets Content-Length itself for a one-chunk list
            return _ClosingSized(result, self._finished)
        return _ClosingIterable(result, self._finished)

    def _finished(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._trim_if_idle(from_timer=False)

    def _trim_if_idle(self, from_timer: bool) -> None:
        with self._lock:
            if from_timer:
                self._timer = None
            if self._in_flight:
                return  # the last request in flight trims when it is done
            wait = self._last_trim + self.interval - self._clock()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._trim_if_idle, kwargs={"from_timer": True})
                    self._timer.daemon = True
                    self._timer.start()
                return
            self._last_trim = self._clock()
        self._trim()


class _ClosingIterable:
    """The application's response, iterated as is; ``close()`` closes it, then tells the middleware."""

    def __init__(self, result: Iterable, on_close: Callable[[], None]):
        self._result = result
        self._on_close = on_close

    def __iter__(self):
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._on_close()


class _ClosingSized(_ClosingIterable):
    def __len__(self) -> int:
        return len(self._result)  # type: ignore[arg-type]
