"""Background jobs: a SQLite job store and per-stack serial execution.

Operations take minutes, so requests only submit a job and return.  At most one job runs
per stack at a time (later ones wait in FIFO order); different stacks run in parallel.
Jobs survive a restart in ``<state_dir>/jobs.sqlite3``; a job that was queued or running
when the agent stopped is marked failed at the next start, never left "running".
"""

from __future__ import annotations

import builtins
import collections
import json
import logging
import math
import os
import shlex
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from fmappliance.agent.docker_cli import compose_failure_reason
from fmappliance.wire import FAILED, FINISHED, JOB_FIELDS, QUEUED, RUNNING, SUCCEEDED, UNFINISHED, format_timestamp

from .runner import CommandResult, OutputTail, redact_text, run_command

log = logging.getLogger(__name__)

MAX_OUTPUT_CHARS = 64_000
FLUSH_INTERVAL_SECONDS = 0.5
KEEP_JOBS = 5_000
ABANDONED_MESSAGE = "The agent stopped while this job was running; it did not finish."
INTERNAL_ERROR_MESSAGE = "Internal error in the agent; see its log."

_COLUMNS = JOB_FIELDS  # the table's columns are the fields the API answers (wire.py)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    id        TEXT NOT NULL UNIQUE,
    action    TEXT NOT NULL,
    stack     TEXT NOT NULL,
    site      TEXT,
    status    TEXT NOT NULL,
    created   TEXT NOT NULL,
    started   TEXT,
    finished  TEXT,
    exit_code INTEGER,
    message   TEXT NOT NULL DEFAULT '',
    output    TEXT NOT NULL DEFAULT '',
    result    TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_by_stack ON jobs (stack, seq);
"""


def utc_now() -> str:
    """Current time as the API writes it (wire.format_timestamp)."""
    return format_timestamp()


class StepFailed(Exception):
    """Raised inside a job body with an operator message; the job fails with that message."""


def _step_label(argv: Sequence[str]) -> str:
    """A short name for a command in messages: the program's base name and its arguments."""
    words = [os.path.basename(argv[0]), *argv[1:]]
    label = shlex.join(words)
    return label if len(label) <= 120 else label[:117] + "..."


def _describe_failure(label: str, result: CommandResult) -> str:
    if result.timed_out:
        return f"`{label}` {result.error}"
    if result.error:
        return result.error
    code = result.exit_code
    missing_plugin = compose_failure_reason(result.argv, result.output)
    if missing_plugin:
        return missing_plugin
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"`{label}` was killed by {name}."
    return f"`{label}` failed with exit code {code}."


class JobContext:
    """What a job body gets: logging into the job's output and running commands."""

    def __init__(self, manager: JobManager, live: _LiveJob):
        self._manager = manager
        self._live = live
        self.job_id = live.job_id
        #: A job body may set this to a one-line outcome shown when the job succeeds.
        self.message: str | None = None
        #: Values this job learned that must never show (temporary passwords, keys); see add_secret.
        self.secrets: list[str] = []
        self.last_exit_code: int | None = None

    def add_secret(self, value: str | None) -> None:
        """Mask ``value`` in this job's output and messages from now on."""
        if value and value not in self.secrets:
            self.secrets.append(value)

    def redact(self, text: str) -> str:
        return redact_text(str(text), [*self._manager.redact, *self.secrets])

    def log(self, text: str) -> None:
        """Append a line (or several) to the job's output, redacted."""
        self._manager._append_output(self._live, self.redact(text))

    def deadline_left(self) -> float:
        """Seconds left of the job's overall time limit (infinity when it has none)."""
        if self._live.deadline is None:
            return math.inf
        return self._live.deadline - time.monotonic()

    def run(
        self,
        argv,
        *,
        timeout: float,
        cwd: str | None = None,
        env: dict | None = None,
        check: bool = True,
        label: str | None = None,
        inspect: Callable[[CommandResult], None] | None = None,
    ) -> CommandResult:
        """Run one command with its output streamed into the job.

        Raises :class:`StepFailed` when the command fails, unless ``check=False``.  ``label``
        names the step in that message (default: the command line).  ``inspect`` sees the result
        first, whatever the exit code, and may raise StepFailed with a better reason (a tool that
        prints a refusal and exits 0).
        """
        if isinstance(argv, (str, bytes)):
            raise TypeError("JobContext.run takes an argv list, never a shell string")
        argv = list(argv)
        label = label or _step_label(argv)
        left = self.deadline_left()
        if left <= 0:
            raise StepFailed(f"The job ran out of time before `{label}` could start.")
        self.log("$ " + shlex.join(argv))
        result = run_command(
            argv,
            timeout=min(timeout, left),
            cwd=cwd,
            env=env,
            on_output=self.log,
            redact=[*self._manager.redact, *self.secrets],
        )
        if result.exit_code is not None:
            self.last_exit_code = result.exit_code
        if result.error:
            self.log(result.error)
        if inspect is not None:
            inspect(result)
        if check and not result.ok:
            raise StepFailed(_describe_failure(label, result))
        return result


class _LiveJob:
    """In-memory state of a queued or running job."""

    def __init__(self, job_id, action, stack, site, body, message, on_start, timeout):
        self.job_id = job_id
        self.key = (action, stack, site)
        self.body = body
        self.message = message
        self.on_start = on_start
        self.deadline = None
        self.timeout = timeout
        self.output = OutputTail(MAX_OUTPUT_CHARS)
        self.last_flush = 0.0
        self.dirty = False


class JobManager:
    """Stores jobs in ``<state_dir>/jobs.sqlite3`` and runs them, one at a time per stack."""

    def __init__(self, state_dir: str, *, redact: Sequence[str] = (), on_finish: Callable[[dict], None] | None = None):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.redact = [s for s in redact if s]
        self.on_finish = on_finish
        self.path = os.path.join(state_dir, "jobs.sqlite3")
        self._lock = threading.RLock()
        self._ended = threading.Condition(self._lock)
        self._live: dict[str, _LiveJob] = {}
        self._queues: dict[str, collections.deque[_LiveJob]] = {}
        self._workers: dict[str, threading.Thread] = {}
        self._closed = False
        # Job output may show paths and host details: keep the store private to the agent
        # (SQLite gives the -wal/-shm files the database file's mode).
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        # One connection shared by all threads, always used under self._lock.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._recover()

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> None:
        with self._lock:
            cur = self._db.execute(
                "UPDATE jobs SET status=?, message=?, finished=COALESCE(finished, ?) WHERE status IN (?, ?)",
                (FAILED, ABANDONED_MESSAGE, utc_now(), *UNFINISHED),
            )
            if cur.rowcount:
                log.warning("marked %d job(s) left over from a previous run as failed", cur.rowcount)
            self._db.execute(
                "DELETE FROM jobs WHERE seq NOT IN (SELECT seq FROM jobs ORDER BY seq DESC LIMIT ?)",
                (KEEP_JOBS,),
            )

    # ------------------------------------------------------------------ public API

    def submit(
        self,
        *,
        action: str,
        stack: str,
        site: str | None,
        body: Callable[[JobContext], dict | None],
        message: str = "",
        on_start: Callable[[dict], None] | None = None,
        timeout: float | None = None,
    ) -> tuple[dict, bool]:
        """Queue a job; returns (job, created).

        An identical (action, stack, site) job already queued or running is returned instead,
        with created=False.  ``on_start(job)`` is called when the job starts running;
        ``timeout`` is an optional overall limit seen by :meth:`JobContext.deadline_left`.
        """
        with self._lock:
            if self._closed:
                raise RuntimeError("the job manager is closed")
            key = (action, stack, site)
            for live in self._live.values():
                if live.key == key:
                    return self._known_locked(live.job_id), False
            job_id = os.urandom(8).hex()  # what secrets.token_hex does, without loading hashlib and random
            live = _LiveJob(job_id, action, stack, site, body, message, on_start, timeout)
            self._db.execute(
                "INSERT INTO jobs (id, action, stack, site, status, created, message) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, action, stack, site, QUEUED, utc_now(), message or "Queued."),
            )
            self._live[job_id] = live
            self._queues.setdefault(stack, collections.deque()).append(live)
            if stack not in self._workers:
                worker = threading.Thread(target=self._work, args=(stack,), daemon=True, name=f"jobs-{stack}")
                self._workers[stack] = worker
                worker.start()
            return self._known_locked(job_id), True

    def get(self, job_id: str) -> dict | None:
        """The job with this id, with live output if it is running; None when unknown."""
        with self._lock:
            if self._closed:
                return None
            return self._get_locked(job_id)

    def list(self, *, stack: str | None = None, limit: int = 50) -> list[dict]:
        """Recent jobs, newest first, optionally of one stack; ``limit`` is kept within 1..500."""
        limit = min(max(int(limit), 1), 500)
        with self._lock:
            if self._closed:
                return []
            if stack is None:
                rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
            else:
                rows = self._db.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE stack=? ORDER BY seq DESC LIMIT ?", (stack, limit)
                )
            return [self._row_to_job(row) for row in rows.fetchall()]

    def finished_jobs(self) -> builtins.list[dict]:
        """Every stored job that has ended (action, stack, site, status, started, finished), oldest first.

        Light rows (no output): the metrics seed their counters from them once at start.
        """
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT action, stack, site, status, started, finished FROM jobs WHERE status IN (?, ?) ORDER BY seq",
                FINISHED,
            ).fetchall()
        keys = ("action", "stack", "site", "status", "started", "finished")
        return [dict(zip(keys, row)) for row in rows]

    def wait(self, job_id: str, timeout: float) -> dict | None:
        """Block until the job has ended or ``timeout`` seconds passed; returns it as it is then."""
        end = time.monotonic() + timeout
        with self._ended:
            while job_id in self._live and not self._closed:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._ended.wait(left)
            return self.get(job_id)

    def close(self, timeout: float = 0.0) -> None:
        """Stop accepting jobs, give running ones up to ``timeout`` seconds, and close the store.

        Jobs still unfinished are abandoned (their threads are daemons) and will be marked
        failed by the next JobManager on this directory.
        """
        with self._lock:
            if self._closed:
                return
            workers = list(self._workers.values())
        end = time.monotonic() + timeout
        for worker in workers:
            worker.join(max(end - time.monotonic(), 0))
        with self._lock:
            for live in self._live.values():
                self._flush_locked(live)
            self._closed = True
            self._queues.clear()
            self._db.close()
            self._ended.notify_all()

    # ------------------------------------------------------------------ internals

    def _get_locked(self, job_id: str) -> dict | None:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE id=?", (job_id,)).fetchone()
        return self._row_to_job(row) if row else None

    def _known_locked(self, job_id: str) -> dict:
        job = self._get_locked(job_id)
        assert job is not None, job_id  # its row was written under the same lock
        return job

    def _row_to_job(self, row) -> dict:
        job = dict(zip(_COLUMNS, row))
        live = self._live.get(job["id"])
        if live is not None:
            job["output"] = live.output.text  # fresher than the last flush
        try:
            job["result"] = json.loads(job["result"] or "{}")
        except ValueError:
            job["result"] = {}
        return job

    def _append_output(self, live: _LiveJob, text: str) -> None:
        with self._lock:
            live.output.append(text + "\n")
            live.dirty = True
            if time.monotonic() - live.last_flush >= FLUSH_INTERVAL_SECONDS:
                self._flush_locked(live)

    def _flush_locked(self, live: _LiveJob) -> None:
        if live.dirty and not self._closed:
            self._db.execute("UPDATE jobs SET output=? WHERE id=?", (live.output.text, live.job_id))
            live.dirty = False
        live.last_flush = time.monotonic()

    def _update(self, job_id: str, **fields) -> dict | None:
        with self._lock:
            if self._closed:
                return None
            assignments = ", ".join(f"{name}=?" for name in fields)
            self._db.execute(f"UPDATE jobs SET {assignments} WHERE id=?", (*fields.values(), job_id))
            return self._get_locked(job_id)

    def _work(self, stack: str) -> None:
        """Worker thread of one stack: run its queued jobs one after another, then exit."""
        while True:
            with self._lock:
                queue = self._queues.get(stack)
                if self._closed or not queue:
                    self._workers.pop(stack, None)
                    self._queues.pop(stack, None)
                    return
                live = queue.popleft()
            self._run_job(live)

    def _run_job(self, live: _LiveJob) -> None:
        if live.timeout is not None:
            live.deadline = time.monotonic() + live.timeout
        ctx = JobContext(self, live)
        job = self._update(live.job_id, status=RUNNING, started=utc_now(), message=live.message or "Running.")
        if job is None:
            return  # closed meanwhile
        action, stack, site = live.key
        status, message, result = FAILED, INTERNAL_ERROR_MESSAGE, {}
        try:
            if live.on_start is not None:
                live.on_start(job)
            returned = live.body(ctx)
            if returned is not None and not isinstance(returned, dict):
                raise TypeError(f"job body returned {type(returned).__name__}, not a dict")
            result = returned or {}
            json.dumps(result)  # fail here, not when storing, if it is not JSON
            target = f"{stack}/{site}" if site else stack
            status, message = SUCCEEDED, ctx.message or f"{action} on {target} succeeded."
        except StepFailed as exc:
            message = ctx.redact(str(exc) or "The job failed.")
            result = {}
        except Exception:
            log.exception("job %s (%s on %s) failed unexpectedly", live.job_id, action, stack)
            result = {}
        with self._lock:
            self._flush_locked(live)
            job = self._update(
                live.job_id,
                status=status,
                finished=utc_now(),
                exit_code=ctx.last_exit_code,
                message=" ".join(message.split()),
                result=json.dumps(result),
            )
            self._live.pop(live.job_id, None)
            if job is not None:
                job["output"] = live.output.text
            self._ended.notify_all()
        if job is not None and self.on_finish is not None:
            try:
                self.on_finish(job)
            except Exception:
                log.exception("on_finish callback failed for job %s", live.job_id)
