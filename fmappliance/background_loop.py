"""One background loop: a daemon thread that calls ``tick`` every so often until it is stopped.

The agent's schedule runner and offsite timer and the dashboard's schedule service, failed-job watch and
fleet events each run one.  What they share lives here, so each keeps only its own timing:

- ``first_delay``: 0 runs the first tick at once; a number waits that long first (a timer that must not
  fire while the service is still starting).
- ``interval``: seconds between the end of one tick and the next, or a callable asked after every tick
  (a runner sleeping until its next due time).
- :meth:`wake` ends the current wait early (new work arrived); :meth:`stop` ends it for good, at once,
  and joins the thread.
- An exception in a tick is logged with the caller's logger and the loop carries on: one bad round must
  not end the service for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundLoop:
    """``BackgroundLoop("name", tick, 10.0, logger=log, failure="...").start()``; ``stop()`` on the way out."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], object],
        interval: float | Callable[[], float],
        *,
        first_delay: float = 0.0,
        logger: logging.Logger | None = None,
        failure: str | None = None,
    ):
        self.name = name
        self._tick = tick
        self._interval = interval if callable(interval) else (lambda: interval)
        self._first_delay = first_delay
        self._log = logger or log
        self._failure = failure or f"{name}: a round failed; the loop keeps running."
        self._wake = threading.Event()
        # One stop Event per run: a thread a timed-out join left behind stays stopped after a restart.
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The running thread (None before start and after stop)."""
        return self._thread

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next tick now (or right after the one in progress)."""
        self._wake.set()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the loop (a wait ends at once; a tick in progress finishes) and wait up to ``timeout`` for it."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self, stop: threading.Event) -> None:
        delay = self._first_delay
        while not self._pause(delay, stop):
            try:
                self._tick()
            except Exception:
                self._log.exception("%s", self._failure)
            delay = self._interval()

    def _pause(self, seconds: float, stop: threading.Event) -> bool:
        """Wait up to ``seconds`` or until woken; True when the loop is to end."""
        if seconds > 0 and not stop.is_set():
            self._wake.wait(seconds)
        self._wake.clear()
        return stop.is_set()
