"""Service logs of a stack, streamed: `docker compose logs` children, their limit and their clean-up.

``LogStreams.open`` checks the request (the service must be one of the stack's services,
``tail`` 1-5000), takes one of ``agent.max_log_streams`` slots for a followed log, starts the
command through runner.py and returns a :class:`LogBody` for the HTTP response.  The body yields
redacted lines as they come, holds nothing more than one read of them (constant memory), and
ends - killing the child's whole process group and freeing the slot - when the output ends, when
the client is gone (checked twice a second while the log is quiet, so a child never outlives
its client by more than about a second plus the kill grace), or when the server closes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from fmappliance.agent import stacks
from fmappliance.agent.errors import AgentError
from fmappliance.agent.inventory import Inventory
from fmappliance.agent.runner import CommandStream, StartFailed, resolve_binary, start_stream
from fmappliance.agent.status import StatusBoard

log = logging.getLogger(__name__)

TAIL_DEFAULT = 200
TAIL_MAX = 5000
#: How often a quiet stream checks whether its client is still there.
IDLE_CHECK_SECONDS = 0.5
#: What a refused followed stream tells the client to wait.
RETRY_AFTER_SECONDS = 10


class LogRequestRejected(AgentError):
    """The request cannot be served: ``status`` (400, 429, 503) and a sentence for the operator."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(status, message, headers={"Retry-After": str(retry_after)} if retry_after else None)
        self.retry_after = retry_after


def parse_tail(raw: str | None) -> int:
    if raw is None or raw == "":
        return TAIL_DEFAULT
    if not raw.isdigit() or not 1 <= int(raw) <= TAIL_MAX:
        raise LogRequestRejected(400, f"tail must be a whole number of lines from 1 to {TAIL_MAX}.")
    return int(raw)


def parse_follow(raw: str | None) -> bool:
    if raw in (None, "", "0"):
        return False
    if raw == "1":
        return True
    raise LogRequestRejected(400, "follow must be 0 (the last lines only) or 1 (keep streaming new lines).")


class LogBody:
    """The response body of one log stream: an iterable of byte chunks with an idempotent close()."""

    def __init__(self, stream: CommandStream, client_gone: Callable[[], bool], release: Callable[[], None]):
        self._stream = stream
        self._client_gone = client_gone
        self._release = release
        self._closed = False
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[bytes]:
        # The status line only leaves with the first non-empty chunk (bottle and waitress both wait
        # for one, PEP 3333): a log that stays quiet answers with an empty line so the client
        # learns at once that its stream is open.  Log lines themselves are never empty (compose
        # prefixes each with its container).
        first = self._stream.read_lines(IDLE_CHECK_SECONDS)
        if first is None:
            return
        yield _encode(first) if first else b"\n"
        while not self._closed:
            lines = self._stream.read_lines(IDLE_CHECK_SECONDS)
            if lines is None:
                return
            if lines:
                yield _encode(lines)
            elif self._client_gone():
                log.info("the client of a log stream went away; stopping it")
                return

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._stream.close()
        finally:
            self._release()


class LogStreams:
    """Starts log streams; at most ``agent.max_log_streams`` followed ones at a time."""

    def __init__(self, config: dict, inventory: Inventory, status: StatusBoard, *, redact=()):
        self.config = config
        self.inventory = inventory
        self.status = status
        self.redact = list(redact)
        self.limit = config["agent"]["max_log_streams"]
        self._slots = threading.BoundedSemaphore(self.limit)
        # Open bodies, so that stopping the agent stops their children too: each runs in its own
        # process group, which outlives the agent unless it is killed (systemd's cgroup kill covers
        # the unit, but not daemon mode or a test's agent).
        self._open: set[LogBody] = set()
        self._open_lock = threading.Lock()

    def services_of(self, stack_name: str) -> list[str]:
        """The stack's services: those docker knows containers of, plus declared ones (fm workers)."""
        stack = self.inventory.stacks[stack_name]
        known = {s["service"] for s in self.status.one(stack_name).get("services") or ()}
        known.update(stacks.for_stack(stack).declared_services())
        return sorted(known)

    def open(
        self, stack_name: str, service: str | None, tail: int, follow: bool, client_gone: Callable[[], bool]
    ) -> LogBody:
        """A started stream, or LogRequestRejected.  ``stack_name`` was checked against the inventory."""
        stack = self.inventory.stacks[stack_name]
        if not service:
            raise LogRequestRejected(400, "Name the service whose log you want: ?service=<name>.")
        services = self.services_of(stack_name)
        if service not in services:
            listed = ", ".join(services) if services else "none found (is the stack down?)"
            raise LogRequestRejected(
                400, f"Stack {stack_name} has no service {service[:60]!r}; its services: {listed}."
            )
        docker = resolve_binary(self.config["agent"]["docker_binary"])
        if docker is None:
            raise LogRequestRejected(
                503, f"docker ({self.config['agent']['docker_binary']}) was not found on the agent."
            )
        if follow and not self._slots.acquire(blocking=False):
            raise LogRequestRejected(
                429,
                f"{self.limit} logs are already being followed (agent.max_log_streams); close one or try again shortly.",
                retry_after=RETRY_AFTER_SECONDS,
            )
        release = self._slots.release if follow else _nothing
        try:
            argv = stacks.for_stack(stack).logs_argv(docker, service, tail, follow)
            stream = start_stream(argv, cwd=stack["path"], redact=self.redact)
        except StartFailed as exc:
            release()
            raise LogRequestRejected(503, f"The log could not be read: {exc}") from None
        except BaseException:
            release()
            raise
        log.info("streaming the log of %s/%s (tail %d, follow %s)", stack_name, service, tail, follow)
        body: LogBody

        def forget_and_release() -> None:
            with self._open_lock:
                self._open.discard(body)
            release()

        body = LogBody(stream, client_gone, forget_and_release)
        with self._open_lock:
            self._open.add(body)
        return body

    def close(self) -> None:
        """Stop every open stream (its child's process group is killed); called when the agent stops."""
        with self._open_lock:
            bodies = list(self._open)
        for body in bodies:
            body.close()


def _encode(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode("utf-8", "replace")


def _nothing() -> None:
    pass
