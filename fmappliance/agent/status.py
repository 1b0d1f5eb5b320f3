"""Stack status: all stacks asked concurrently, each answer cached for a few seconds.

One slow or broken stack never holds up the others: docker missing, the daemon down, a
compose error or a timeout make that stack ``unknown`` with a reason.  Two requests that
need the same stack at the same moment share one `docker compose ps`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from fmappliance.agent import stacks
from fmappliance.agent.docker_cli import PLUGIN_MISSING_REASON, plugin_missing
from fmappliance.agent.inventory import Inventory
from fmappliance.agent.runner import redact_text, resolve_binary, run_command
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

DAEMON_DOWN_MARKERS = (
    "Cannot connect to the Docker daemon",
    "Is the docker daemon running",
    "permission denied while trying to connect",
)

#: Upper bound of each of the two worker pools (idle workers cost little memory; see `make bench`).
MAX_WORKERS = 128


class StatusBoard:
    """Status of every configured stack, cached per stack for ``agent.status_cache_seconds``."""

    def __init__(self, config: dict, inventory: Inventory, *, clock=time.monotonic):
        self.config = config
        self.inventory = inventory
        self.ttl = config["agent"]["status_cache_seconds"]
        self.timeout = config["agent"]["status_timeout"]
        self._clock = clock
        # Reentrant: a future that is already done runs its callback (which locks) at once.
        self._lock = threading.RLock()
        self._cache: dict[str, tuple[float, dict]] = {}
        self._inflight: dict[str, Future] = {}
        self._generation: dict[str, int] = {}
        # One worker per stack: the workers only wait on docker, and a cold listing should take
        # as long as the slowest stack, not (stacks / workers) rounds of it.
        workers = max(4, min(MAX_WORKERS, len(inventory.stacks)))
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="status")
        # Site lists run in their own pool: a status task waits for its site list, and must
        # never wait for a worker of its own pool.
        self._sites_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sites")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._sites_pool.shutdown(wait=False, cancel_futures=True)

    def invalidate(self, stack_name: str) -> None:
        """Forget a stack's cached status (after an action on it)."""
        with self._lock:
            self._cache.pop(stack_name, None)
            # A check already running began before the change: later requests start a fresh one.
            self._inflight.pop(stack_name, None)
            self._generation[stack_name] = self._generation.get(stack_name, 0) + 1
        self.inventory.invalidate(stack_name)

    def all(self) -> list[dict]:
        """Every stack's status, in name order, asking docker concurrently for stale ones."""
        names = self.inventory.stack_names()
        now = self._clock()
        with self._lock:  # the warm path: fresh answers straight from the cache, one lock for all
            fresh = {name: cached[1] for name in names if (cached := self._cache.get(name)) and cached[0] > now}
        futures = {name: self._future(name) for name in names if name not in fresh}
        return [dict(fresh[name]) if name in fresh else self._result(name, futures[name]) for name in names]

    def one(self, stack_name: str) -> dict:
        return self._result(stack_name, self._future(stack_name))

    # ------------------------------------------------------------------ internals

    def _future(self, name: str) -> Future:
        with self._lock:
            cached = self._cache.get(name)
            if cached and cached[0] > self._clock():
                done: Future = Future()
                done.set_result(cached[1])
                return done
            fut = self._inflight.get(name)
            if fut is None:
                generation = self._generation.get(name, 0)
                fut = self._pool.submit(self._check, name)
                self._inflight[name] = fut
                fut.add_done_callback(functools.partial(self._store, name, generation))
            return fut

    def _store(self, name: str, generation: int, fut: Future) -> None:
        with self._lock:
            if self._inflight.get(name) is fut:
                del self._inflight[name]
            if fut.cancelled() or fut.exception() is not None:
                return
            # An action that invalidated the stack meanwhile makes this answer stale.
            if self._generation.get(name, 0) == generation and self.ttl > 0:
                self._cache[name] = (self._clock() + self.ttl, fut.result())

    def _result(self, name: str, fut: Future) -> dict:
        try:
            status = dict(fut.result(timeout=self.timeout + 5))
        except Exception as exc:  # a bug or a stuck thread must not take the whole page down
            log.warning("status of stack %s failed: %s", name, exc)
            status = self._base(name)
            status.update(status="unknown", reason="the agent could not determine the status in time")
        return status

    def _base(self, name: str) -> dict:
        stack = self.inventory.stacks[name]
        driver = stacks.for_stack(stack)
        return {
            "name": name,
            "type": driver.kind,
            # whether restore_site may create a new site here (an fm bench has exactly one)
            "creates_sites": driver.new_site_refusal() is None,
            "path": stack["path"],
            "status": "unknown",
            "reason": None,
            "services": [],
            "sites": [],
            "needs_migration": False,
            "checked_at": format_timestamp(),
        }

    def _check(self, name: str) -> dict:
        stack = self.inventory.stacks[name]
        out = self._base(name)
        # The site list of a compose stack may need the container: ask it alongside ps.
        sites = self._sites_pool.submit(self.inventory.sites_for_display, name)
        try:
            self._ask_docker(stack, out)
            self._ask_migration(stack, out)
        finally:
            try:
                out["sites"] = sites.result(timeout=self.timeout + 5)
            except Exception:
                log.exception("listing the sites of %s failed", name)
        return out

    def _ask_migration(self, stack: dict, out: dict) -> None:
        """An fm bench whose files an older Frappe Manager wrote: its containers' status stands, the reason
        says what to run (fm itself would only print "Bench migration required" and do nothing)."""
        fm = resolve_binary(self.config["agent"]["fm_binary"])
        reason = stacks.for_stack(stack).migration_reason(fm)
        if reason:
            out["needs_migration"] = True
            out["reason"] = reason if not out["reason"] else f"{reason} ({out['reason']})"

    def _ask_docker(self, stack: dict, out: dict) -> None:
        binary_name = self.config["agent"]["docker_binary"]
        docker = resolve_binary(binary_name)
        if docker is None:
            out["reason"] = f"docker not found ({binary_name!r} is not on PATH or not executable)"
            return
        driver = stacks.for_stack(stack)
        # The JSON is parsed, never shown: the look-alike secret patterns would only cost time.
        result = run_command(driver.ps_argv(docker), timeout=self.timeout, cwd=stack["path"], parsed_only=True)
        out["checked_at"] = format_timestamp()
        if result.timed_out:
            out["reason"] = f"docker compose ps did not answer within {self.timeout} s"
            return
        if not result.ok:
            text = redact_text(result.output.strip())  # lines of it become the reason shown
            if plugin_missing(text):
                out["reason"] = PLUGIN_MISSING_REASON
            elif any(marker in text for marker in DAEMON_DOWN_MARKERS):
                line = next(ln for ln in text.splitlines() if any(m in ln for m in DAEMON_DOWN_MARKERS))
                out["reason"] = "docker daemon not reachable: " + line.strip()
            else:
                last = text.splitlines()[-1].strip() if text else ""
                out["reason"] = (
                    "docker compose ps failed: "
                    + (result.error or f"exit code {result.exit_code}")
                    + (f": {last}" if last else "")
                )
            return
        services = driver.services(result.output)
        status, reason = driver.status_of(services)
        out.update(status=status, reason=reason, services=services)
