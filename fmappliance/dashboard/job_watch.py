"""Failed-job notifications for restores, restore tests, updates and offsite jobs, whoever started them.

A restore started through the agent's API, an update started by the scheduler and one started
from a page must all reach the operator the same way: through the dashboard's
``notifications`` settings. So instead of hooking each caller, a small thread polls the agent's
job list (``GET /jobs?limit=N``, newest first) and notifies every watched job that ends
``failed``, once.

Why this stays cheap and still misses nothing:

- A short list is asked for every ``poll_seconds``. If the newest job of the previous poll is
  no longer in it (more than N jobs were created meanwhile, e.g. a burst of scheduled
  backups), the long list (500) is asked for once.
- Watched jobs seen queued or running are remembered and, once they fall out of the short
  list (a restore can run for an hour while backups queue behind it), asked for one by one.
- "Notified" is a row in the dashboard's SQLite state, claimed before sending, so a job is
  notified once even when two checks see it fail at the same time.

At start the watcher takes the agent's current list as its baseline: failures that ended
before the dashboard started are not notified (they were, or would be noise, after a
restart); jobs still running then are watched. Until the agent has answered once, nothing
is notified.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from fmappliance import actions_table, wire
from fmappliance.background_loop import BackgroundLoop
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

#: The agent action whose failure is notified, and as which event (each action's failure_event).
EVENT_OF_ACTION = actions_table.EVENT_OF_ACTION
POLL_SECONDS = 10.0
SHORT_LIST = 25
LONG_LIST = 500
UNFINISHED = wire.UNFINISHED

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS notified_jobs ("
    " job_id TEXT PRIMARY KEY, action TEXT NOT NULL, event TEXT NOT NULL,"
    " notified INTEGER NOT NULL, time TEXT NOT NULL)"
)


def _subject(job: Mapping) -> str:
    spec = actions_table.spec_of(str(job.get("action")))
    what = spec.failure_subject if spec is not None and spec.failure_subject else "Job on {stack}"
    return what.format(stack=job.get("stack") or "?", site=job.get("site") or "?") + " failed"


class FailedJobWatcher:
    """Polls the agent's jobs and notifies the failed ones of :data:`EVENT_OF_ACTION`.

    ``list_jobs(limit)`` returns the newest jobs first; ``get_job(job_id)`` returns one job and
    raises ``LookupError`` when the agent no longer knows it. Any other exception from either
    means "agent unreachable": this poll is skipped. ``notifier`` has ``notify(event, subject,
    details)``; ``db`` is the dashboard's :class:`StateDB`.
    """

    def __init__(
        self,
        db,
        list_jobs: Callable[[int], list],
        get_job: Callable[[str], dict],
        notifier,
        *,
        poll_seconds: float = POLL_SECONDS,
        clock: Callable[[], float] | None = None,
    ):
        self._db = db
        self._list_jobs = list_jobs
        self._get_job = get_job
        self._notifier = notifier
        self.poll_seconds = poll_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # A poll at once (failures that happened while the dashboard was down), then every poll_seconds.
        self._background = BackgroundLoop(
            "failed-job-watch",
            self.poll,
            lambda: self.poll_seconds,
            logger=log,
            failure=f"Checking the agent's jobs for failures went wrong; trying again in {poll_seconds:g} s.",
        )
        self._ready = False
        self._newest: str | None = None  # the newest job id of the last list; None: none asked for yet
        self._in_flight: dict[str, str] = {}  # job id -> action, watched jobs not yet ended
        with db.transaction() as conn:
            conn.execute(_SCHEMA)

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._background.start()

    def stop(self, timeout: float = 5) -> None:
        self._background.stop(timeout)

    # ---- polling ----------------------------------------------------------------------

    def poll(self) -> int:
        """One check; returns how many failures it notified (0 while the agent is away)."""
        with self._lock:
            try:
                jobs = self._jobs()
            except Exception as exc:
                log.info("Could not list the agent's jobs: %s", exc)
                return 0
            if not self._ready:
                self._take_baseline(jobs)
                return 0
            notified = sum(self._note(job) for job in jobs)
            listed = {str(job.get("id")) for job in jobs}
            for job_id in [j for j in self._in_flight if j not in listed]:
                try:
                    job = self._get_job(job_id)
                except LookupError:
                    self._in_flight.pop(job_id, None)
                    continue
                except Exception as exc:
                    log.info("Could not fetch job %s from the agent: %s", job_id, exc)
                    continue
                if isinstance(job, dict):
                    notified += self._note(job)
            return notified

    def _jobs(self) -> list[dict]:
        jobs = [j for j in self._list_jobs(SHORT_LIST) if isinstance(j, dict) and j.get("id")]
        if self._newest is not None and len(jobs) >= SHORT_LIST and self._newest not in {str(j["id"]) for j in jobs}:
            # More jobs were created since the last poll than the short list holds.
            jobs = [j for j in self._list_jobs(LONG_LIST) if isinstance(j, dict) and j.get("id")]
        # "" once the agent answered with no jobs at all: then every job listed later is new.
        self._newest = str(jobs[0]["id"]) if jobs else (self._newest or "")
        return jobs

    def _take_baseline(self, jobs: list[dict]) -> None:
        ended = []
        for job in jobs:
            action = str(job.get("action") or "")
            if action not in EVENT_OF_ACTION:
                continue
            if job.get("status") in UNFINISHED:
                self._in_flight[str(job["id"])] = action
            elif job.get("status") == wire.FAILED:
                ended.append((str(job["id"]), action, EVENT_OF_ACTION[action], 0, self._now()))
        with self._db.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO notified_jobs (job_id, action, event, notified, time) VALUES (?, ?, ?, ?, ?)",
                ended,
            )
        self._ready = True
        log.info(
            "Watching the agent's jobs for failed %s (%d running now).",
            ", ".join(sorted(EVENT_OF_ACTION)),
            len(self._in_flight),
        )

    def _note(self, job: Mapping) -> int:
        action = str(job.get("action") or "")
        event = EVENT_OF_ACTION.get(action)
        job_id = str(job.get("id") or "")
        if event is None or not job_id:
            return 0
        status = job.get("status")
        if status in UNFINISHED:
            self._in_flight[job_id] = action
            return 0
        self._in_flight.pop(job_id, None)
        if status != wire.FAILED or not self._claim(job_id, action, event):
            return 0
        details = {
            "job_id": job_id,
            "action": action,
            "stack": job.get("stack"),
            "site": job.get("site"),
            "finished": job.get("finished"),
            "message": job.get("message") or "The job failed; see its output.",
        }
        log.warning("Job %s (%s of %s) failed: %s", job_id, action, job.get("stack"), details["message"])
        try:
            self._notifier.notify(event, _subject(job), {k: v for k, v in details.items() if v is not None})
        except Exception:
            log.exception("Could not queue the %s notification for job %s.", event, job_id)
        return 1

    def _claim(self, job_id: str, action: str, event: str) -> bool:
        """Record the job as notified; False when it already was (or was part of the baseline)."""
        with self._db.transaction() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO notified_jobs (job_id, action, event, notified, time) VALUES (?, ?, ?, 1, ?)",
                (job_id, action, event, self._now()),
            )
            return cursor.rowcount == 1

    def _now(self) -> str:
        return format_timestamp(self._clock() if self._clock else None)


def build_failed_job_watcher(
    config: Mapping, agent, db, *, notifier=None, poll_seconds: float = POLL_SECONDS
) -> FailedJobWatcher:
    """The watcher as the serving dashboard runs it: over the agent client, sending through
    ``notifications``. Not started: call ``start()`` (and ``stop()`` at exit)."""
    from fmappliance.dashboard.agent_client import AgentError
    from fmappliance.dashboard.notifications import Notifier

    def get_job(job_id: str) -> dict:
        try:
            return agent.job(job_id)
        except AgentError as exc:
            if exc.status == 404:
                raise LookupError(job_id) from None
            raise

    return FailedJobWatcher(
        db,
        lambda limit: agent.jobs(limit=limit),
        get_job,
        notifier if notifier is not None else Notifier(config.get("notifications")),
        poll_seconds=poll_seconds,
    )
