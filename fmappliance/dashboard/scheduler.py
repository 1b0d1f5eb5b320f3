"""The dashboard's schedule service: the agent runs the schedules, the dashboard edits and watches.

Schedules used to run in this process; now the agent runs them (fmappliance/agent/schedules.py)
so no backup is skipped while the dashboard is down.  What stays here, on a small
``schedule.Scheduler()`` loop that never blocks on the agent (agent calls go to a worker pool):

- every ``tick_seconds`` (1 s): a schedule changed through the shared store (a page) is pushed
  to the agent at once (:class:`ScheduleSync`, ``PUT /schedules``);
- every ``sync_seconds`` (30 s): the agent's applied version is compared and the set pushed
  again when it differs, and the agent's outcome records are read to notify failed and missed
  runs (with a cursor, so what happened while the dashboard was down is notified once);
- every 10 minutes: schedules whose stack or site is gone are marked broken for the page;
- the weekly summary (Monday 08:00 server time);
- run rows and job polling are kept for runs the old in-dashboard engine started before an
  upgrade (their outcomes still arrive).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from typing import Any

import schedule as schedule_lib

from fmappliance.background_loop import BackgroundLoop
from fmappliance.dashboard.handoff import BackupHandoff
from fmappliance.dashboard.notifications import Notifier, weekly_summary
from fmappliance.dashboard.schedule_store import ScheduleStore, runs_on
from fmappliance.dashboard.schedule_sync import PENDING, ScheduleSync
from fmappliance.schedule_calendar import next_runs, server_timezone

log = logging.getLogger(__name__)

#: How far back the job-outcome poll looks for runs the old engine submitted.
JOB_POLL_WINDOW = timedelta(days=2)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class ScheduleService:
    """The dashboard's schedule service: ``start()`` / ``stop()``, ``status()``, ``push()``.

    ``sync`` is the :class:`ScheduleSync` talking to the agent (None: no agent, tests of the
    page alone).  ``list_sites(stack)`` returns the stack's sites and raises ``LookupError``
    (KeyError) when the stack no longer exists; any other exception means "agent unreachable".
    ``get_job(job_id)`` (optional) returns an agent job, to follow runs of the old engine.
    ``clock()`` returns aware UTC now (injectable for tests).
    """

    def __init__(
        self,
        store: ScheduleStore,
        sync: ScheduleSync | None = None,
        *,
        list_sites: Callable[[str], list],
        notifier=None,
        clock: Callable[[], datetime] | None = None,
        tick_seconds: float = 1.0,
        sync_seconds: float = 30.0,
        get_job: Callable[[str], dict] | None = None,
        workers: int = 2,
        job_poll_seconds: int = 30,
        restore_proofs: Callable[[], Mapping] | None = None,
    ):
        self.store = store
        self.sync = sync
        #: () -> the ScheduleSync of every fleet server (FleetSchedules.syncs); set by the serving
        #: process when it runs a hub.  Each server gets its own schedules through its own link.
        self.fleet_syncs: Callable[[], list[ScheduleSync]] = list
        self.fleet: Any = None  # the FleetSchedules behind fleet_syncs (its .of(name) for the pages)
        self._get_job = get_job
        self._notifier = notifier
        self._clock = clock or _utc_now
        self._handoff = BackupHandoff(store, list_sites, get_job, notify=self._notify, clock=self._clock)
        self._restore_proofs = restore_proofs
        self._tick = tick_seconds
        # Every tick (at once, then each tick_seconds or sooner when a periodic job is due sooner).
        self._background = BackgroundLoop(
            "schedule-watch",
            self.run_pending,
            self._idle_seconds,
            logger=log,
            failure="Schedule job run_pending failed; the loop keeps running.",
        )
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._futures: set[Future] = set()
        self._futures_lock = threading.Lock()
        self._push_lock = threading.Lock()
        self._generation = store.generation
        self._scheduler = schedule_lib.Scheduler()
        # schedule annotates the interval as int but handles a float (tests tick faster than 1 s).
        self._scheduler.every(tick_seconds).seconds.do(self._guarded, self._tick_changes)  # type: ignore[arg-type]
        if sync is not None:
            self._scheduler.every(sync_seconds).seconds.do(self._guarded, self.check_agent)  # type: ignore[arg-type]
        if get_job is not None:
            self._scheduler.every(job_poll_seconds).seconds.do(self._guarded, self.poll_jobs)
        self._scheduler.every(10).minutes.do(self._guarded, self.check_health)
        if notifier is not None and "weekly_summary" in getattr(notifier, "events", ()):
            # Server-local wall time is fine for a summary, so schedule's own .at() serves.
            self._scheduler.every().monday.at("08:00").do(self._guarded, self.send_weekly_summary)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Report runs of the old engine a crash interrupted, push the set, then start the loop."""
        for run in self.store.fail_interrupted_runs():
            self._notify(
                "backup_failed",
                f"Scheduled backup of {run['site']} on {run['stack']} was interrupted",
                run,
                run["message"],
            )
        self._generation = self.store.generation
        if self.sync is not None:
            # At start: the set (config.yaml may have changed), then what happened meanwhile.
            self._spawn(self.check_agent, True)
        self._guarded(self.check_health)
        self._background.start()
        log.info("Schedule service started: %d schedule(s), run by the agent.", len(self.store.list()))

    def stop(self, timeout: float = 15) -> None:
        """Stop the loop and let agent calls in progress finish (each bounded by the agent timeout)."""
        self._background.stop(timeout)
        self.drain(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _idle_seconds(self) -> float:
        idle = self._scheduler.idle_seconds
        return self._tick if idle is None else min(max(idle, 0.01), self._tick)

    def run_pending(self) -> None:
        """One pass of the periodic jobs (the loop calls this; each job is guarded)."""
        self._scheduler.run_pending()

    def _guarded(self, func, *args):
        # An exception in a periodic job is logged and never ends the loop.
        try:
            return func(*args)
        except Exception:
            log.exception("Schedule job %s failed; the loop keeps running.", getattr(func, "__name__", func))
            return None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every agent call started so far has finished; True when all did."""
        with self._futures_lock:
            pending = set(self._futures)
        done, not_done = wait(pending, timeout=timeout)
        return not not_done

    def _spawn(self, func, *args) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="schedule-agent")
        future = self._pool.submit(self._guarded, func, *args)
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    # ---- the agent --------------------------------------------------------------------

    def _tick_changes(self) -> None:
        if self.store.generation != self._generation:
            self._generation = self.store.generation
            if self.sync is not None:
                self._spawn(self.push)

    def push(self) -> bool:
        """Send the whole set to the agent now (pages call this after a change, through the tick)."""
        if self.sync is None:
            return False
        with self._push_lock:
            pushed = self.sync.push()
            for sync in self.fleet_syncs():
                self._guarded(sync.push)  # one unreachable server does not hold the others back
            return pushed

    def check_agent(self, push_first: bool = False) -> None:
        """Push when the agent's version differs (or ``push_first``), then notify what it recorded."""
        if self.sync is None:
            return
        with self._push_lock:
            if push_first:
                self.sync.push()
            else:
                self.sync.sync()
        self.sync.watch()
        for sync in self.fleet_syncs():
            # A server cut off from the dashboard runs its set on its own; what it recorded meanwhile
            # is read (and notified once) when its link is back.
            with self._push_lock:
                self._guarded(sync.push if push_first else sync.sync)
            self._guarded(sync.watch)

    def check_health(self) -> None:
        """Mark schedules whose stack or site is gone as broken (and clear the mark when it is
        back) without waiting for their next due time; asks the agent in a worker."""
        # Only the dashboard's own server's: list_sites asks the local agent.
        local = self.sync.local_name if self.sync is not None else "local"
        schedules = [s for s in self.store.list() if not s["invalid"] and runs_on(s, None, local)]
        if schedules:
            self._spawn(self._handoff.check_sites, schedules)

    # ---- job outcomes of the old engine's runs ----------------------------------------

    def poll_jobs(self) -> None:
        """Ask the agent how jobs the old engine submitted ended (in a worker, never in the loop)."""
        job_ids = self.store.unfinished_jobs(self._clock() - JOB_POLL_WINDOW)
        if job_ids and self._get_job is not None:
            self._spawn(self._handoff.poll, job_ids)

    def note_job(self, job: Mapping) -> None:
        """Record an agent job's status on the old engine's run rows (pages call this too)."""
        self._handoff.note_job(job)

    # ---- UI ---------------------------------------------------------------------------

    def sync_of(self, server: str | None) -> ScheduleSync | None:
        """The ScheduleSync of ``server`` (None or the local name: the dashboard's own)."""
        if server is None or self.sync is None or server == self.sync.local_name:
            return self.sync
        return self.fleet.of(server) if self.fleet is not None else None

    def applied(self, server: str | None = None) -> dict:
        """The agent's applied version for the page: ``{"version", "state"}`` (state "applied" or "pending: ...")."""
        sync = self.sync_of(server)
        view = sync.view() if sync is not None else None
        if sync is None:
            return {"version": None, "state": PENDING}
        return {"version": (view or {}).get("version"), "state": sync.state if view is not None else PENDING}

    def status(self, now: datetime | None = None, server: str | None = None) -> list[dict]:
        """Per schedule, for the scheduler page and its JSON answer.

        Each: the schedule's fields plus ``status`` ("ok" | "disabled" | "broken"),
        ``broken_reason``, ``next_runs`` (3 ISO times with offsets, in the schedule's zone),
        and from the agent (None while it does not answer): ``next_due``, ``last_handled``,
        ``lateness_seconds``, ``missed_total``; ``last_run``/``last_runs``: the agent's last
        result as a run row (else the old engine's newest rows).
        """
        now = now or self._clock()
        sync = self.sync_of(server)
        view = sync.view() if sync is not None else None
        ran = {item.get("id"): item for item in (view or {}).get("schedules") or [] if isinstance(item, dict)}
        out = []
        local = self.sync.local_name if self.sync is not None else "local"
        for schedule in self.store.list():
            if not runs_on(schedule, server, local):
                continue  # another server's (its page is /s/<server>/scheduler)
            item = dict(schedule)
            if schedule["broken_reason"]:
                item["status"] = "broken"
            else:
                item["status"] = "ok" if schedule["enabled"] else "disabled"
            item["next_runs"] = (
                []
                if schedule["invalid"] or not schedule["enabled"]
                else [t.isoformat() for t in next_runs(schedule, now, 3)]
            )
            agent_item = ran.get(schedule["id"]) or {}
            for key in ("next_due", "last_handled", "lateness_seconds", "missed_total"):
                item[key] = agent_item.get(key)
            handled = agent_item.get("last_handled")
            if isinstance(handled, dict):
                run = _run_of(schedule, handled)
                item["last_run"], item["last_runs"] = run, [run]
            else:
                item["last_run"] = self.store.last_run(schedule["id"])
                item["last_runs"] = self.store.last_runs(schedule["id"])
            out.append(item)
        return out

    def send_weekly_summary(self) -> None:
        """Queue the ``weekly_summary`` notification (broken schedules, failed last runs, and
        each site's last proof of restorability when the agent can be asked), for the dashboard's
        own server and every fleet server."""
        stacks: Mapping | None | bool = False  # False: no agent to ask, no proof lines
        if self._restore_proofs is not None:
            try:
                stacks = self._restore_proofs()
            except Exception as exc:  # the summary still goes out, saying the proofs are unknown
                log.info("Could not ask the agent for the last test restores: %s", exc)
                stacks = None
        # Every fleet server's schedules too (issue 24): read from the store and each one's last known
        # agent view; a server that does not answer now is reported with what is known, proofs unknown.
        servers = []
        for sync in self.fleet_syncs():
            try:
                items = self.status(server=sync.server)
            except Exception as exc:
                log.info("Could not list the schedules of %s for the weekly summary: %s", sync.server, exc)
                items = []
            try:
                _, proofs = sync.agent.request("GET", "/stacks")
            except Exception as exc:
                log.info("Could not ask %s for its last test restores: %s", sync.server, exc)
                proofs = None
            servers.append((sync.server or "", items, proofs))
        subject, details = weekly_summary(self.status(), stacks, servers)
        if self._notifier is not None:
            self._notifier.notify("weekly_summary", subject, details)

    # ---- helpers ----------------------------------------------------------------------

    def _notify(self, event: str, subject: str, details: Mapping, message: str) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.notify(event, subject, {**details, "message": message})
        except Exception:
            log.exception("Could not queue the %s notification.", event)


def _run_of(schedule: Mapping, handled: Mapping) -> dict:
    """The agent's ``last_handled`` in the shape of a run row (what the page and summary read)."""
    status = handled.get("status")
    return {
        "schedule_id": schedule["id"],
        "stack": schedule["stack"],
        "site": schedule["site"],
        "due": handled.get("due"),
        "started": handled.get("due"),
        "job_id": handled.get("job"),
        "result": status,
        "job_status": status if status in ("succeeded", "failed") else None,
        "message": handled.get("message") or "",
        "catch_up": bool(handled.get("catch_up")),
    }


def scheduler_from_config(
    config: Mapping,
    agent,
    *,
    list_sites: Callable[[str], list],
    get_job: Callable[[str], dict] | None = None,
    clock: Callable[[], datetime] | None = None,
    restore_proofs: Callable[[], Mapping] | None = None,
) -> ScheduleService:
    """The service as the dashboard runs it: store in ``dashboard.state_dir``, the
    ``schedules:`` of config.yaml, ``notifications:`` and ``scheduler.catchup_hours`` (sent to
    the agent with the set).  Not started: call ``start()`` in the serving process."""
    clock = clock or _utc_now
    store = ScheduleStore(
        config["dashboard"]["state_dir"],
        config_schedules=config.get("schedules") or (),
        default_tz=server_timezone(),
        clock=clock,
    )
    notifier = Notifier(config.get("notifications"))

    def notify(event: str, subject: str, details: Mapping, message: str) -> None:
        try:
            notifier.notify(event, subject, {**details, "message": message})
        except Exception:
            log.exception("Could not queue the %s notification.", event)

    sync = (
        ScheduleSync(
            store,
            agent,
            catchup_hours=config["scheduler"]["catchup_hours"],
            notify=notify,
            clock=clock,
            local_name=config["fleet"]["local_name"],
        )
        if agent is not None
        else None
    )
    return ScheduleService(
        store,
        sync,
        list_sites=list_sites,
        get_job=get_job,
        notifier=notifier,
        clock=clock,
        restore_proofs=restore_proofs,
    )
