"""The backup scheduler engine: decides when a schedule is due and hands the backup to the agent.

Why the ``schedule`` library is only the metronome here: its ``.at()`` needs pytz for time
zones (not a dependency we take) and it has no monthly jobs, and it forgets missed runs.
So the calendar arithmetic lives in :func:`schedule_calendar.next_runs` (zoneinfo, DST-correct),
the "what was already handled" state lives in SQLite (:class:`schedule_store.ScheduleStore`), and
our own ``schedule.Scheduler()`` runs three small periodic jobs: the due check every
``tick_seconds`` (1 s; it also reloads when the shared store's definitions changed), a full
reload every minute (a safety net for changes made through another store instance) and,
when ``get_job`` is given, a poll of
the outcome of the agent jobs it started. One ticking job, rather than one job per
schedule re-armed from ``next_runs``, keeps the due decision in a single place that
start-up catch-up shares, and an idle tick is only a comparison of a few datetimes.

A due run never blocks the loop: the loop persists the due time as handled (so a
restart never runs it twice: at most once, by design) with a ``pending`` run row, and a
small worker pool asks the agent for the stack's sites and posts ``backup_site``
(handoff.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from typing import Any

import schedule as schedule_lib

from fmappliance.dashboard.backup_age import age_text, plural
from fmappliance.dashboard.handoff import BackupHandoff, target_text
from fmappliance.dashboard.notifications import Notifier, weekly_summary
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.names import format_timestamp
from fmappliance.schedule_calendar import ON_TIME, decide_due, next_runs, server_timezone
from fmappliance.schedule_fields import action_text

log = logging.getLogger(__name__)

__all__ = ["ON_TIME", "BackupScheduler", "scheduler_from_config"]
#: How far back the job-outcome poll looks for submitted runs.
JOB_POLL_WINDOW = timedelta(days=2)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class BackupScheduler:
    """Runs the stored schedules: ``start()`` / ``stop()``, ``reload()``, ``status()``.

    ``submit_backup(stack, site)`` posts ``backup_site`` to the agent and returns the job
    (or the agent's whole answer ``{"job": ..., "duplicate": ...}``); it raises on refusal.
    ``list_sites(stack)`` returns the stack's sites and raises ``LookupError`` (KeyError)
    when the stack no longer exists; any other exception means "agent unreachable".
    ``get_job(job_id)`` (optional) returns the agent job, to follow its outcome.
    ``clock()`` returns aware UTC now (injectable for tests).
    """

    def __init__(
        self,
        store: ScheduleStore,
        submit_backup: Callable[[str, str], dict],
        *,
        list_sites: Callable[[str], list],
        notifier=None,
        catchup_hours: float = 6,
        clock: Callable[[], datetime] | None = None,
        tick_seconds: float = 1.0,
        get_job: Callable[[str], dict] | None = None,
        workers: int = 4,
        job_poll_seconds: int = 30,
        submit_test_restore: Callable[[str, str], dict] | None = None,
        restore_proofs: Callable[[], Mapping] | None = None,
    ):
        self.store = store
        self._get_job = get_job
        self._notifier = notifier
        self.catchup = timedelta(hours=catchup_hours)
        self._clock = clock or _utc_now
        self._handoff = BackupHandoff(
            store,
            submit_backup,
            list_sites,
            get_job,
            notify=self._notify,
            clock=self._clock,
            on_broken=self._mark_broken,
            submit_test_restore=submit_test_restore,
        )
        self._restore_proofs = restore_proofs
        self._tick = tick_seconds
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="backup-handoff"
        )
        self._futures: set[Future] = set()
        self._futures_lock = threading.Lock()
        self._plan: dict[str, dict] = {}  # id -> {"schedule", "last_due", "next_due"}
        self._generation = -1
        self._scheduler = schedule_lib.Scheduler()
        # schedule annotates the interval as int but handles a float (tests tick faster than 1 s).
        self._scheduler.every(tick_seconds).seconds.do(self._guarded, self._tick_due)  # type: ignore[arg-type]
        self._scheduler.every(60).seconds.do(self._guarded, self.reload)
        if get_job is not None:
            self._scheduler.every(job_poll_seconds).seconds.do(self._guarded, self.poll_jobs)
        self._scheduler.every(10).minutes.do(self._guarded, self.check_health)
        if notifier is not None and "weekly_summary" in getattr(notifier, "events", ()):
            # Server-local wall time is fine for a summary, so schedule's own .at() serves.
            self._scheduler.every().monday.at("08:00").do(self._guarded, self.send_weekly_summary)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Fail runs a crash interrupted, catch up missed runs, then start the loop thread."""
        for run in self.store.fail_interrupted_runs():
            self._notify(
                "backup_failed",
                f"Scheduled backup of {run['site']} on {run['stack']} was interrupted",
                run,
                run["message"],
            )
        self._guarded(self.reload)
        self._guarded(self.check_due, self._clock())
        self._guarded(self.check_health)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="backup-scheduler", daemon=True)
        self._thread.start()
        log.info("Backup scheduler started with %d schedule(s).", len(self._plan))

    def stop(self, timeout: float = 15) -> None:
        """Stop the loop and let hand-offs in progress finish (each bounded by the agent timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.drain(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._guarded(self.run_pending)
            idle = self._scheduler.idle_seconds
            self._stop.wait(self._tick if idle is None else min(max(idle, 0.01), self._tick))

    def run_pending(self) -> None:
        """One pass of the periodic jobs (the loop calls this; each job is guarded)."""
        self._scheduler.run_pending()

    def _guarded(self, func, *args):
        # An exception in a periodic job is logged and never ends the loop (schedule lets
        # it propagate out of run_pending otherwise).
        try:
            return func(*args)
        except Exception:
            log.exception("Scheduler job %s failed; the scheduler keeps running.", getattr(func, "__name__", func))
            return None

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every hand-off started so far has finished; True when all did."""
        with self._futures_lock:
            pending = set(self._futures)
        done, not_done = wait(pending, timeout=timeout)
        return not not_done

    def _spawn(self, func, *args) -> Future:
        if self._pool is None:  # started again after stop()
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="backup-handoff")
        future = self._pool.submit(self._guarded, func, *args)
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._futures_lock:
            self._futures.discard(future)

    # ---- planning ---------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the schedules (call after add / remove / enable / disable)."""
        # Under the lock for the whole read: a due time handled meanwhile must not come back
        # from a stale read (that would run it twice).
        with self._lock:
            self._generation = self.store.generation
            self._plan = self._read_plan(self._clock())

    def _read_plan(self, now: datetime) -> dict:
        plan = {}
        last_dues = self.store.last_dues()
        for schedule in self.store.list():
            entry: dict[str, Any] = {"schedule": schedule, "last_due": None, "next_due": None}
            plan[schedule["id"]] = entry
            if schedule["invalid"]:
                continue
            last_due = last_dues.get(schedule["id"])
            if last_due is None:
                # First sight of a config-declared schedule: due times before now are not "missed".
                last_due = now
                self.store.set_last_due(schedule["id"], now)
            entry["last_due"] = last_due
            entry["next_due"] = next_runs(schedule, last_due, 1)[0].astimezone(timezone.utc)
            if not schedule["enabled"] and entry["next_due"] <= now:
                # Paused: move the state along so resuming never "catches up" or reports misses.
                entry["last_due"] = now
                self.store.set_last_due(schedule["id"], now)
                entry["next_due"] = next_runs(schedule, now, 1)[0].astimezone(timezone.utc)
        return plan

    def _tick_due(self) -> None:
        if self.store.generation != self._generation:
            self.reload()  # a page changed a schedule through the shared store
        self.check_due(self._clock())

    def check_due(self, now: datetime) -> list[str]:
        """Handle every schedule due at or before ``now``; returns the ids handled.

        Per schedule, of the due times since the last handled one only the latest can run:
        on time (within 2 min), as a catch-up (within ``catchup_hours``) or not at all; the
        others are recorded as missed (one row, one ``backup_missed`` notification).
        """
        now = now.astimezone(timezone.utc)
        handled = []
        with self._lock:
            for entry in self._plan.values():
                schedule = entry["schedule"]
                if entry["next_due"] is None or not schedule["enabled"] or entry["next_due"] > now:
                    continue
                try:
                    self._handle_due(entry, now)
                except Exception:
                    log.exception("Handling schedule %s failed; other schedules are not affected.", schedule["id"])
                    # Never retry the same due time in a tight loop.
                    entry["last_due"] = now
                    entry["next_due"] = next_runs(schedule, now, 1)[0].astimezone(timezone.utc)
                handled.append(schedule["id"])
        return handled

    def _handle_due(self, entry: dict, now: datetime) -> None:
        schedule = entry["schedule"]
        decision = decide_due(schedule, entry["last_due"], now, self.catchup)
        if decision is None:  # next_due was stale (a reload raced the check): nothing to do
            return
        latest, run, catch_up, missed = decision.latest, decision.run, decision.catch_up, list(decision.missed)
        # Persist "handled" before handing off: a crash now loses this run (reported at the
        # next start as interrupted) instead of running it twice.
        self.store.set_last_due(schedule["id"], latest)
        entry["last_due"] = latest
        entry["next_due"] = next_runs(schedule, latest, 1)[0].astimezone(timezone.utc)

        if missed:
            first, last = missed[0], missed[-1]
            when = (
                f"at {last:%Y-%m-%d %H:%M %Z}"
                if len(missed) == 1
                else f"from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M %Z}"
            )
            why = (
                "only the most recent missed run is made up"
                if run
                else f"runs more than {age_text(self.catchup)} late are not made up (scheduler.catchup_hours)"
            )
            message = (
                f"{plural(len(missed), 'scheduled ' + action_text(schedule))} {when} did not run because the dashboard "
                f"was not running; {why}."
            )
            self.store.record_run(
                schedule["id"],
                last,
                now,
                None,
                "missed",
                message,
                False,
                site=schedule["site"],
                stack=schedule["stack"],
            )
            self._notify(
                "backup_missed",
                f"Scheduled {action_text(schedule)} of {target_text(schedule)} missed",
                {
                    "schedule_id": schedule["id"],
                    "stack": schedule["stack"],
                    "site": schedule["site"],
                    "due": format_timestamp(last),
                    "missed": len(missed),
                },
                message,
            )
            log.warning("Schedule %s: %s", schedule["id"], message)
        if run:
            note = (
                f"Catch-up of the run due {latest:%Y-%m-%d %H:%M %Z}, missed while the dashboard was down."
                if catch_up
                else f"Handing the {action_text(schedule)} to the agent."
            )
            run_id = self.store.record_run(
                schedule["id"],
                latest,
                now,
                None,
                "pending",
                note,
                catch_up,
                site=schedule["site"],
                stack=schedule["stack"],
            )
            log.info(
                "Schedule %s due at %s: %s of %s%s.",
                schedule["id"],
                format_timestamp(latest),
                action_text(schedule),
                target_text(schedule),
                " (catch-up)" if catch_up else "",
            )
            self._spawn(self._handoff.hand_off, schedule, run_id, catch_up)

    # ---- hand-off (worker threads) ----------------------------------------------------

    def check_health(self) -> None:
        """Mark schedules whose stack or site is gone as broken (and clear the mark when it is
        back) without waiting for their next due time; asks the agent in a worker."""
        with self._lock:
            schedules = [e["schedule"] for e in self._plan.values() if not e["schedule"]["invalid"]]
        if schedules:
            self._spawn(self._handoff.check_sites, schedules)

    # ---- job outcomes -----------------------------------------------------------------

    def poll_jobs(self) -> None:
        """Ask the agent how submitted jobs ended (in a worker, never in the loop)."""
        job_ids = self.store.unfinished_jobs(self._clock() - JOB_POLL_WINDOW)
        if job_ids and self._get_job is not None:
            self._spawn(self._handoff.poll, job_ids)

    def note_job(self, job: Mapping) -> None:
        """Record an agent job's status on its run rows; notify ``backup_failed`` when it failed.

        The pages may call this too when they show a job (notification sent once).
        """
        self._handoff.note_job(job)

    def _mark_broken(self, schedule_id: str, reason: str) -> None:
        with self._lock:
            entry = self._plan.get(schedule_id)
            if entry is not None:
                entry["schedule"]["broken_reason"] = reason

    # ---- UI ---------------------------------------------------------------------------

    def status(self, now: datetime | None = None) -> list[dict]:
        """Per schedule, for the scheduler page and its JSON answer.

        Each: the schedule's fields plus ``status`` ("ok" | "disabled" | "broken"),
        ``broken_reason``, ``next_runs`` (3 ISO times with offsets, in the schedule's zone),
        ``last_run`` (newest run row or None) and ``last_runs`` (every row of the latest due
        time: one per site for an every-site schedule).
        """
        now = now or self._clock()
        out = []
        for schedule in self.store.list():
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
            item["last_run"] = self.store.last_run(schedule["id"])
            item["last_runs"] = self.store.last_runs(schedule["id"])
            out.append(item)
        return out

    def send_weekly_summary(self) -> None:
        """Queue the ``weekly_summary`` notification (broken schedules, failed last runs, and
        each site's last proof of restorability when the agent can be asked)."""
        stacks: Mapping | None | bool = False  # False: no agent to ask, no proof lines
        if self._restore_proofs is not None:
            try:
                stacks = self._restore_proofs()
            except Exception as exc:  # the summary still goes out, saying the proofs are unknown
                log.info("Could not ask the agent for the last test restores: %s", exc)
                stacks = None
        subject, details = weekly_summary(self.status(), stacks)
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


def scheduler_from_config(
    config: Mapping,
    submit_backup: Callable[[str, str], dict],
    *,
    list_sites: Callable[[str], list],
    get_job: Callable[[str], dict] | None = None,
    clock: Callable[[], datetime] | None = None,
    submit_test_restore: Callable[[str, str], dict] | None = None,
    restore_proofs: Callable[[], Mapping] | None = None,
) -> BackupScheduler:
    """The engine as the dashboard runs it: store in ``dashboard.state_dir``, the
    ``schedules:`` of config.yaml, ``notifications:`` and ``scheduler.catchup_hours``.
    Not started: call ``start()`` in the serving process (and ``stop()`` at exit)."""
    store = ScheduleStore(
        config["dashboard"]["state_dir"],
        config_schedules=config.get("schedules") or (),
        default_tz=server_timezone(),
        clock=clock,
    )
    return BackupScheduler(
        store,
        submit_backup,
        list_sites=list_sites,
        get_job=get_job,
        notifier=Notifier(config.get("notifications")),
        clock=clock,
        catchup_hours=config["scheduler"]["catchup_hours"],
        submit_test_restore=submit_test_restore,
        restore_proofs=restore_proofs,
    )
