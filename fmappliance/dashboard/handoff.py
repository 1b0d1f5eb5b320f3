"""The schedule service's agent calls that run in worker threads, never in its loop.

The agent starts scheduled jobs itself now (agent/schedules.py).  Here: ``check_sites`` marks
schedules whose stack or site is gone as broken for the page; ``poll``/``note_job`` follow
jobs the dashboard's old engine handed to the agent before an upgrade, to their outcome, and
notify ``backup_failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from fmappliance import wire
from fmappliance.actions_table import EVENT_OF_ACTION
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.schedule_fields import EVERY_SITE

log = logging.getLogger(__name__)


class BackupHandoff:
    """See the module docstring; the callables are the engine's (see :class:`ScheduleService`)."""

    def __init__(
        self,
        store: ScheduleStore,
        list_sites: Callable[[str], list],
        get_job: Callable[[str], dict] | None,
        *,
        notify: Callable[[str, str, Mapping, str], None],
        clock: Callable[[], datetime],
    ):
        self.store = store
        self._list_sites = list_sites
        self._get_job = get_job
        self._notify = notify
        self._clock = clock

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

        The pages may call this too when they show a job (notification sent once). A failed job
        whose action has its own failure event (a ``test_restore``: ``restore_test_failed``) is not
        notified here: the failed-job watcher sends that event for every such job, scheduled or not.
        """
        for run in self.store.update_run_result(str(job["id"]), job["status"]):
            if job["status"] == wire.FAILED and job.get("action") not in EVENT_OF_ACTION:
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
