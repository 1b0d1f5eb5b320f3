"""The backup scheduler engine: decides when a schedule is due and hands the backup to the agent.

Why the ``schedule`` library is only the metronome here: its ``.at()`` needs pytz for time
zones (not a dependency we take) and it has no monthly jobs, and it forgets missed runs.
So the calendar arithmetic lives in :func:`schedules.next_runs` (zoneinfo, DST-correct),
the "what was already handled" state lives in SQLite (:class:`schedules.ScheduleStore`), and
our own ``schedule.Scheduler()`` runs three small periodic jobs: the due check every
``tick_seconds`` (1 s; it also reloads when the shared store's definitions changed), a full
reload every minute (a safety net for changes made through another store instance) and,
when ``get_job`` is given, a poll of
the outcome of the agent jobs it started. One ticking job, rather than one job per
schedule re-armed from ``next_runs``, keeps the due decision in a single place that
start-up catch-up shares, and an idle tick is only a comparison of a few datetimes.

A due run never blocks the loop: the loop persists the due time as handled (so a
restart never runs it twice: at most once, by design) with a ``pending`` run row, and a
small worker pool asks the agent for the stack's sites and posts ``backup_site``. The
agent de-duplicates an identical queued/running job, so a schedule colliding with a
manual backup gives one backup.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone

import schedule as schedule_lib

from fmappliance.dashboard.notifications import Notifier, weekly_summary
from fmappliance.dashboard.schedules import (
    EVERY_SITE,
    INTERVALS,
    ScheduleStore,
    from_iso,
    next_runs,
    runs_between,
    server_timezone,
    to_iso,
)

log = logging.getLogger(__name__)

#: A due time handled this late is still an ordinary run (the loop ticks every second; this
#: absorbs a busy machine or a short suspend). Later than this it is a catch-up.
ON_TIME = timedelta(minutes=2)
#: How far back the job-outcome poll looks for submitted runs.
JOB_POLL_WINDOW = timedelta(days=2)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return _plural(int(hours), "hour") if hours < 48 else _plural(int(hours // 24), "day")


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
    ):
        self.store = store
        self._submit_backup = submit_backup
        self._list_sites = list_sites
        self._get_job = get_job
        self._notifier = notifier
        self.catchup = timedelta(hours=catchup_hours)
        self._clock = clock or _utc_now
        self._tick = tick_seconds
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="backup-handoff")
        self._futures: set[Future] = set()
        self._futures_lock = threading.Lock()
        self._plan: dict[str, dict] = {}  # id -> {"schedule", "last_due", "next_due"}
        self._generation = -1
        self._scheduler = schedule_lib.Scheduler()
        self._scheduler.every(tick_seconds).seconds.do(self._guarded, self._tick_due)
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
            entry = {"schedule": schedule, "last_due": None, "next_due": None}
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
        dues = runs_between(schedule, entry["last_due"], now)
        latest = dues[-1]
        lateness = now - latest
        if lateness <= ON_TIME:
            run, catch_up = True, False
        elif lateness <= self.catchup:
            run, catch_up = True, True
        else:
            run, catch_up = False, False
        missed = dues[:-1] if run else dues
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
                else f"runs more than {_age(self.catchup)} late are not made up (scheduler.catchup_hours)"
            )
            message = (
                f"{_plural(len(missed), 'scheduled backup')} {when} did not run because the dashboard "
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
                f"Scheduled backup of {self._target(schedule)} missed",
                {
                    "schedule_id": schedule["id"],
                    "stack": schedule["stack"],
                    "site": schedule["site"],
                    "due": to_iso(last),
                    "missed": len(missed),
                },
                message,
            )
            log.warning("Schedule %s: %s", schedule["id"], message)
        if run:
            note = (
                f"Catch-up of the run due {latest:%Y-%m-%d %H:%M %Z}, missed while the dashboard was down."
                if catch_up
                else "Handing the backup to the agent."
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
                "Schedule %s due at %s: backing up %s%s.",
                schedule["id"],
                to_iso(latest),
                self._target(schedule),
                " (catch-up)" if catch_up else "",
            )
            self._spawn(self._hand_off, schedule, run_id, catch_up)

    # ---- hand-off (worker threads) ----------------------------------------------------

    def _hand_off(self, schedule: Mapping, run_id: int, catch_up: bool) -> None:
        stack, site = schedule["stack"], schedule["site"]
        try:
            sites = list(self._list_sites(stack))
        except LookupError:
            return self._broken(
                schedule, run_id, f"Stack {stack!r} no longer exists; remove this schedule or restore the stack."
            )
        except Exception as exc:
            message = f"Could not ask the agent for the sites of {stack!r}: {exc}"
            self.store.replace_run(run_id, [{"result": "failed", "message": message}])
            self._notify(
                "backup_failed",
                f"Scheduled backup of {self._target(schedule)} failed",
                {"schedule_id": schedule["id"], "stack": stack, "site": site},
                message,
            )
            return None
        if site != EVERY_SITE and site not in sites:
            return self._broken(
                schedule,
                run_id,
                f"Site {site!r} is no longer on stack {stack!r}; remove this schedule or restore the site.",
            )
        if schedule.get("broken_reason"):
            self.store.set_broken(schedule["id"], None)
            schedule["broken_reason"] = None
        targets = sites if site == EVERY_SITE else [site]
        if not targets:
            self.store.replace_run(run_id, [{"result": "skipped", "message": f"Stack {stack!r} has no sites yet."}])
            return None
        rows = []
        for target in targets:
            started = self._clock()
            try:
                answer = self._submit_backup(stack, target)
                job = answer.get("job") if isinstance(answer, dict) and isinstance(answer.get("job"), dict) else answer
                job_id = str(job.get("id")) if isinstance(job, dict) and job.get("id") else None
                duplicate = isinstance(answer, dict) and (answer.get("duplicate") or (job or {}).get("duplicate"))
                message = (
                    f"Joined the backup already queued or running (job {job_id})."
                    if duplicate
                    else f"Handed to the agent as job {job_id}."
                )
                rows.append(
                    {
                        "site": target,
                        "started": started,
                        "job_id": job_id,
                        "result": "submitted",
                        "message": ("Catch-up. " if catch_up else "") + message,
                        "job_status": (job or {}).get("status") if isinstance(job, dict) else None,
                    }
                )
            except Exception as exc:
                message = f"The agent did not accept the backup of {target} on {stack}: {exc}"
                log.warning("Schedule %s: %s", schedule["id"], message)
                rows.append({"site": target, "started": started, "result": "failed", "message": message})
                self._notify(
                    "backup_failed",
                    f"Scheduled backup of {target} on {stack} failed",
                    {"schedule_id": schedule["id"], "stack": stack, "site": target},
                    message,
                )
        self.store.replace_run(run_id, rows)
        return None

    def check_health(self) -> None:
        """Mark schedules whose stack or site is gone as broken (and clear the mark when it is
        back) without waiting for their next due time; asks the agent in a worker."""
        with self._lock:
            schedules = [e["schedule"] for e in self._plan.values() if not e["schedule"]["invalid"]]
        if schedules:
            self._spawn(self._check_health, schedules)

    def _check_health(self, schedules: list) -> None:
        sites_of: dict[str, list | None] = {}
        for schedule in schedules:
            stack, site = schedule["stack"], schedule["site"]
            if stack not in sites_of:
                try:
                    sites_of[stack] = list(self._list_sites(stack))
                except LookupError:
                    sites_of[stack] = None
                except Exception as exc:  # agent unreachable: no verdict this time
                    log.info("Could not check the sites of %s: %s", stack, exc)
                    return
            sites = sites_of[stack]
            if sites is None:
                reason = f"Stack {stack!r} no longer exists; remove this schedule or restore the stack."
            elif site != EVERY_SITE and site not in sites:
                reason = f"Site {site!r} is no longer on stack {stack!r}; remove this schedule or restore the site."
            else:
                reason = None
            if reason != schedule.get("broken_reason"):
                if reason:
                    log.warning("Schedule %s is broken: %s", schedule["id"], reason)
                self.store.set_broken(schedule["id"], reason)
                schedule["broken_reason"] = reason

    def _broken(self, schedule: Mapping, run_id: int, reason: str) -> None:
        log.warning("Schedule %s is broken: %s", schedule["id"], reason)
        self.store.set_broken(schedule["id"], reason)
        with self._lock:
            entry = self._plan.get(schedule["id"])
            if entry is not None:
                entry["schedule"]["broken_reason"] = reason
        self.store.replace_run(run_id, [{"result": "skipped", "message": reason}])
        self._notify(
            "backup_failed",
            f"Scheduled backup of {self._target(schedule)} cannot run",
            {"schedule_id": schedule["id"], "stack": schedule["stack"], "site": schedule["site"]},
            reason,
        )

    # ---- job outcomes -----------------------------------------------------------------

    def poll_jobs(self) -> None:
        """Ask the agent how submitted jobs ended (in a worker, never in the loop)."""
        job_ids = self.store.unfinished_jobs(self._clock() - JOB_POLL_WINDOW)
        if job_ids and self._get_job is not None:
            self._spawn(self._poll, job_ids)

    def _poll(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            try:
                job = self._get_job(job_id)
            except Exception as exc:
                log.info("Could not fetch job %s from the agent: %s", job_id, exc)
                continue
            if isinstance(job, dict) and job.get("status"):
                self.note_job(job)

    def note_job(self, job: Mapping) -> None:
        """Record an agent job's status on its run rows; notify ``backup_failed`` when it failed.

        The pages may call this too when they show a job (notification sent once).
        """
        for run in self.store.update_run_result(str(job["id"]), job["status"]):
            if job["status"] == "failed":
                self._notify(
                    "backup_failed",
                    f"Scheduled backup of {run['site']} on {run['stack']} failed",
                    {
                        "schedule_id": run["schedule_id"],
                        "stack": run["stack"],
                        "site": run["site"],
                        "job_id": job["id"],
                    },
                    job.get("message") or "The backup job failed.",
                )

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
        """Queue the ``weekly_summary`` notification (broken schedules, failed last runs)."""
        subject, details = weekly_summary(self.status())
        if self._notifier is not None:
            self._notifier.notify("weekly_summary", subject, details)

    # ---- helpers ----------------------------------------------------------------------

    @staticmethod
    def _target(schedule: Mapping) -> str:
        site = "every site" if schedule["site"] == EVERY_SITE else schedule["site"]
        return f"{site} on {schedule['stack']}"

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
    )


def overdue_sites(schedules: Iterable[Mapping], last_backups: Mapping, now: datetime) -> list[dict]:
    """Sites whose last good backup is older than twice their schedule's interval.

    ``last_backups`` maps ``(stack, site)`` to the created time (aware datetime or ISO
    string) of the newest verified backup, or None. An every-site schedule covers the
    sites of its stack found in ``last_backups``. A site with several schedules is judged
    by the most frequent; disabled and invalid schedules don't count. A site never
    backed up is overdue once its schedule is older than the limit (or of unknown age).
    """
    limits: dict[tuple, tuple] = {}
    for schedule in schedules:
        if not schedule.get("enabled", True) or schedule.get("invalid"):
            continue
        limit = 2 * INTERVALS[schedule["frequency"]]
        if schedule["site"] == EVERY_SITE:
            keys = [k for k in last_backups if k[0] == schedule["stack"]]
        else:
            keys = [(schedule["stack"], schedule["site"])]
        for key in keys:
            if key not in limits or limit < limits[key][0]:
                limits[key] = (limit, schedule)
    out = []
    for (stack, site), (limit, schedule) in sorted(limits.items()):
        created = last_backups.get((stack, site))
        if isinstance(created, str):
            created = from_iso(created)
        every = {"daily": "every day", "weekly": "every week", "monthly": "every month"}[schedule["frequency"]]
        if created is None:
            since = (
                from_iso(schedule.get("created_at"))
                if isinstance(schedule.get("created_at"), str)
                else schedule.get("created_at")
            )
            if since is not None and now - since <= limit:
                continue
            message = f"No good backup of {site} on {stack} yet, although its {schedule['frequency']} schedule expects one {every}."
        elif now - created > limit:
            message = (
                f"The last good backup of {site} on {stack} is {_age(now - created)} old; "
                f"its {schedule['frequency']} schedule expects one {every}."
            )
        else:
            continue
        out.append(
            {
                "stack": stack,
                "site": site,
                "schedule_id": schedule["id"],
                "frequency": schedule["frequency"],
                "last_backup": to_iso(created),
                "limit_hours": int(limit.total_seconds() // 3600),
                "message": message,
            }
        )
    return out
