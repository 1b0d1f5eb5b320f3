"""The scheduler's side that talks to the agent, run in worker threads, never in the loop.

``hand_off`` turns a due run into ``backup_site`` (or, for a ``test_restore`` schedule,
``test_restore``) requests (one per site of an every-site schedule) and records what the agent answered; ``check_sites`` marks schedules whose stack
or site is gone as broken; ``poll``/``note_job`` follow the jobs to their outcome and notify
``backup_failed``.  The agent de-duplicates an identical queued/running job, so a schedule
colliding with a manual backup gives one backup.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.schedule_fields import EVERY_SITE, action_text, kind_of

log = logging.getLogger(__name__)


def failure_event(schedule: Mapping) -> str:
    """The notification event of a scheduled run that could not be handed off."""
    return "restore_test_failed" if kind_of(schedule) == "test_restore" else "backup_failed"


def target_text(schedule: Mapping) -> str:
    """ "site1.example.com on prod", "every site on prod"."""
    site = "every site" if schedule["site"] == EVERY_SITE else schedule["site"]
    return f"{site} on {schedule['stack']}"


class BackupHandoff:
    """See the module docstring; the callables are the engine's (see :class:`BackupScheduler`)."""

    def __init__(
        self,
        store: ScheduleStore,
        submit_backup: Callable[[str, str], dict],
        list_sites: Callable[[str], list],
        get_job: Callable[[str], dict] | None,
        *,
        notify: Callable[[str, str, Mapping, str], None],
        clock: Callable[[], datetime],
        on_broken: Callable[[str, str], None],
        submit_test_restore: Callable[[str, str], dict] | None = None,
    ):
        self.store = store
        self._submit = {"backup": submit_backup, "test_restore": submit_test_restore}
        self._list_sites = list_sites
        self._get_job = get_job
        self._notify = notify
        self._clock = clock
        self._on_broken = on_broken

    def hand_off(self, schedule: dict, run_id: int, catch_up: bool) -> None:
        """Ask for the stack's sites, post the schedule's action for each target, record the outcome rows."""
        stack, site = schedule["stack"], schedule["site"]
        what, event = action_text(schedule), failure_event(schedule)
        submit = self._submit.get(kind_of(schedule))
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
                event,
                f"Scheduled {what} of {target_text(schedule)} failed",
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
                if submit is None:
                    raise RuntimeError(f"this dashboard cannot ask the agent for a {what}")
                answer = submit(stack, target)
                job = answer.get("job") if isinstance(answer, dict) and isinstance(answer.get("job"), dict) else answer
                job_id = str(job.get("id")) if isinstance(job, dict) and job.get("id") else None
                duplicate = isinstance(answer, dict) and (answer.get("duplicate") or (job or {}).get("duplicate"))
                message = (
                    f"Joined the {what} already queued or running (job {job_id})."
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
                message = f"The agent did not accept the {what} of {target} on {stack}: {exc}"
                log.warning("Schedule %s: %s", schedule["id"], message)
                rows.append({"site": target, "started": started, "result": "failed", "message": message})
                self._notify(
                    event,
                    f"Scheduled {what} of {target} on {stack} failed",
                    {"schedule_id": schedule["id"], "stack": stack, "site": target},
                    message,
                )
        self.store.replace_run(run_id, rows)
        return None

    def check_sites(self, schedules: list) -> None:
        """Mark schedules whose stack or site is gone as broken, and clear the mark when it is back."""
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
        self._on_broken(schedule["id"], reason)
        self.store.replace_run(run_id, [{"result": "skipped", "message": reason}])
        self._notify(
            failure_event(schedule),
            f"Scheduled {action_text(schedule)} of {target_text(schedule)} cannot run",
            {"schedule_id": schedule["id"], "stack": schedule["stack"], "site": schedule["site"]},
            reason,
        )

    def poll(self, job_ids: Iterable[str]) -> None:
        """Ask the agent how each job ended and record it."""
        if self._get_job is None:
            return
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

        The pages may call this too when they show a job (notification sent once). A failed
        ``test_restore`` job is not notified here: the failed-job watcher sends
        ``restore_test_failed`` for every failed test restore, scheduled or not.
        """
        for run in self.store.update_run_result(str(job["id"]), job["status"]):
            if job["status"] == "failed" and job.get("action") != "test_restore":
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
