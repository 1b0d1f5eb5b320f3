"""Schedules run by the agent: the pushed set, its due-time state, and the runner loop.

The dashboard edits schedules and pushes the whole set (``PUT /schedules``) with a version;
the agent keeps it in ``<state_dir>/schedules.json`` and runs it, so no backup is skipped
while the dashboard is down.  The calendar rules (due times, DST, catch-up, missed) are the
shared ones of :mod:`fmappliance.schedule_calendar`; entries are checked like the dashboard's
add form (:func:`fmappliance.schedule_fields.validate_schedule`).

The file holds the set, each schedule's "handled through" due time (so a due time is handled
once, across restarts), the jobs it started and a short history of outcomes the dashboard
reads with a cursor (``GET /schedules/history``) to notify failed and missed runs.  It is
written whole, atomically (temp file, fsync, rename): a crash leaves the old or the new set.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone

from fmappliance import wire
from fmappliance.agent.errors import AgentError
from fmappliance.atomic_file import temp_prefix, write_json_atomically
from fmappliance.background_loop import BackgroundLoop
from fmappliance.prometheus_text import Family
from fmappliance.schedule_calendar import decide_due, next_due, server_timezone
from fmappliance.schedule_fields import EVERY_SITE, FIELDS, action_text, kind_of, validate_schedule
from fmappliance.wire import format_timestamp, parse_timestamp

log = logging.getLogger(__name__)

FILE_NAME = "schedules.json"
FILE_FORMAT = 1
MAX_SCHEDULES = 500
#: Outcome records kept for the dashboard's cursor (it notifies at most 200 per catch-up).
KEEP_HISTORY = 1000
#: The loop sleeps until the next due time, but never longer: a wall-clock jump (suspend,
#: NTP step) is noticed within this.
MAX_SLEEP_SECONDS = 60.0
#: handled_through may be at most this far ahead of the agent's clock (clock skew).
FUTURE_SLACK = timedelta(minutes=5)
ENTRY_FIELDS = ("id", *FIELDS, "enabled", "handled_through")
TOP_FIELDS = ("version", "catchup_hours", "schedules")
SCHEDULE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}", re.ASCII)
#: last_handled.status: "running" while an on-time job has not ended, "catch-up" while a
#: caught-up job has not ended, then "succeeded" or "failed"; "missed" when it did not run.
STATUSES = ("running", "catch-up", "succeeded", "failed", "missed")


class ScheduleFileError(Exception):
    """schedules.json exists but cannot be read; ``str()`` is one line for the operator."""


class PushRejected(AgentError):
    """A ``PUT /schedules`` that is not applied; ``status`` is the HTTP status to answer, ``details`` go along."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ---- validation of a push ----------------------------------------------------------------


def _entry_name(index: int, raw: object) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and SCHEDULE_ID.fullmatch(raw["id"]):
        return f'schedules[{index}] (id "{raw["id"]}")'
    return f"schedules[{index}]"


def _reject_entry(index: int, raw: object, field: str, message: str) -> PushRejected:
    return PushRejected(400, f"{_entry_name(index, raw)}: {field}: {message}", entry=index, field=field)


def parse_push(data: object, *, now: datetime, default_tz: str | None = None) -> dict:
    """Check a ``PUT /schedules`` body; returns ``{"version", "catchup_hours", "schedules"}``.

    Raises :class:`PushRejected` (400) naming the first bad entry and field.  Stack and site
    names are checked for shape only: a schedule whose stack is gone is kept and recorded
    failed when due (the operator sees why), never refused here.
    """
    if not isinstance(data, dict):
        raise PushRejected(
            400, 'The body must be a JSON object: {"version": N, "catchup_hours": H, "schedules": [...]}.'
        )
    unexpected = sorted(k for k in data if k not in TOP_FIELDS)
    if unexpected:
        raise PushRejected(
            400,
            "Unexpected field(s): "
            + ", ".join(repr(k)[:40] for k in unexpected)
            + "; accepted: "
            + ", ".join(TOP_FIELDS),
            field=unexpected[0],
        )
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise PushRejected(400, "version: give the set's version as a whole number (0 or more).", field="version")
    hours = data.get("catchup_hours")
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 <= hours <= 24 * 366:
        raise PushRejected(
            400,
            "catchup_hours: give how many hours late a missed run may still be made up (0 to 8784).",
            field="catchup_hours",
        )
    entries = data.get("schedules")
    if not isinstance(entries, list):
        raise PushRejected(400, "schedules: give the whole set as a list (empty: no schedules).", field="schedules")
    if len(entries) > MAX_SCHEDULES:
        raise PushRejected(400, f"schedules: at most {MAX_SCHEDULES} schedules per server.", field="schedules")
    default_tz = default_tz or server_timezone()
    clean_entries = []
    seen: set[str] = set()
    for index, raw in enumerate(entries):
        clean_entries.append(_parse_entry(index, raw, seen, now, default_tz))
    return {"version": version, "catchup_hours": float(hours), "schedules": clean_entries}


def _parse_entry(index: int, raw: object, seen: set, now: datetime, default_tz: str) -> dict:
    if not isinstance(raw, dict):
        raise _reject_entry(index, raw, "entry", "each schedule is a JSON object.")
    unexpected = sorted(k for k in raw if k not in ENTRY_FIELDS)
    if unexpected:
        raise _reject_entry(
            index, raw, str(unexpected[0])[:40], "unexpected field; accepted: " + ", ".join(ENTRY_FIELDS) + "."
        )
    schedule_id = raw.get("id")
    if not isinstance(schedule_id, str) or not SCHEDULE_ID.fullmatch(schedule_id):
        raise _reject_entry(index, raw, "id", "give a text id of 1-64 letters, digits, '_', '-', '.' or ':'.")
    if schedule_id in seen:
        raise _reject_entry(index, raw, "id", "this id appears twice in the set; ids must be unique.")
    seen.add(schedule_id)
    for key in FIELDS:
        value = raw.get(key)
        if isinstance(value, bool) or (value is not None and not isinstance(value, (str, int))):
            raise _reject_entry(index, raw, key, "give a text (or a number for day_of_month).")
    if "kind" in raw and raw["kind"] not in ("backup", "test_restore"):
        raise _reject_entry(index, raw, "kind", "choose backup or test_restore.")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise _reject_entry(index, raw, "enabled", "give true or false.")
    clean, errors = validate_schedule(raw, known_stacks=None, default_tz=default_tz)
    if errors:
        field = next(f for f in FIELDS if f in errors)
        raise _reject_entry(index, raw, field, errors[field])
    assert clean is not None
    clean["id"] = schedule_id
    clean["enabled"] = enabled
    if raw.get("handled_through") is not None:
        through = parse_timestamp(raw["handled_through"])
        if through is None:
            raise _reject_entry(index, raw, "handled_through", "give a UTC time like 2026-01-13T02:00:00Z.")
        if through > now + FUTURE_SLACK:
            raise _reject_entry(
                index, raw, "handled_through", "it is in the future; it must be the last due time already handled."
            )
        clean["handled_through"] = format_timestamp(through)
    return clean


def _definition(schedule: Mapping) -> list:
    return [schedule.get(k) for k in FIELDS]


# ---- the file ----------------------------------------------------------------------------


def _empty_book() -> dict:
    return {
        "format": FILE_FORMAT,
        "version": None,
        "received": None,
        "catchup_hours": 6.0,
        "schedules": [],
        "state": {},
        "jobs": {},
        "history": [],
        "next_seq": 1,
    }


def load_book(path: str) -> dict:
    """The stored book, or an empty one when there is no file yet; raises ScheduleFileError."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return _empty_book()
    except OSError as exc:
        raise ScheduleFileError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions") from None
    try:
        book = json.loads(text)
    except ValueError as exc:
        raise ScheduleFileError(
            f"{path} is not valid JSON ({exc}); restore it or move it away (the dashboard then pushes its set again)"
        ) from None
    if not isinstance(book, dict) or book.get("format") != FILE_FORMAT or not isinstance(book.get("schedules"), list):
        raise ScheduleFileError(
            f"{path} is not a schedule file of this agent; restore it or move it away "
            "(the dashboard then pushes its set again)"
        )
    full = _empty_book()
    full.update(book)
    return full


def save_book(path: str, book: Mapping) -> None:
    """Write the book atomically: a reader or a crash sees the old file or the new one."""
    write_json_atomically(path, book, 0o600, separators=(",", ":"))


# ---- the runner --------------------------------------------------------------------------


class ScheduleRunner:
    """Keeps the pushed set and runs it: ``start()``/``stop()``, ``push()``, ``view()``, ``history()``.

    ``start_job(action, stack, site, options)`` is the agent's own action path
    (:meth:`Actions.start`): returns ``(job, created, message)`` or raises with ``status``
    and ``message`` (ActionRejected).  ``list_sites(stack)`` returns the stack's sites and
    raises ``NameRejected`` for a stack that is not configured.  ``get_job(id)`` reads a job.
    """

    def __init__(
        self,
        state_dir: str,
        *,
        start_job: Callable[[str, str, str, dict], tuple],
        list_sites: Callable[[str], list],
        get_job: Callable[[str], dict | None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ):
        self.path = os.path.join(state_dir, FILE_NAME)
        self._start_job = start_job
        self._list_sites = list_sites
        self._get_job = get_job
        self._clock = clock or _utc_now
        self._lock = threading.RLock()
        # The first check at once; then asleep until the next due time, or until a push wakes it.
        self._background = BackgroundLoop(
            "schedule-runner",
            self.check_due,
            self._sleep_seconds,
            logger=log,
            failure="The schedule check failed; the runner keeps running.",
        )
        self._remove_stale_temp_files(state_dir, temp_prefix(self.path))
        self._book = load_book(self.path)  # raises ScheduleFileError: the agent does not start
        self._next: dict[str, datetime | None] = {}
        self._plan()

    @staticmethod
    def _remove_stale_temp_files(state_dir: str, prefix: str) -> None:
        """A kill during a write leaves its temp file; the set itself is the old or the new one."""
        try:
            names = [n for n in os.listdir(state_dir) if n.startswith(prefix) and n.endswith(".tmp")]
        except OSError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(state_dir, name))
            except OSError:
                pass

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> ScheduleRunner:
        """Settle jobs that ended while the agent was down, then run the loop thread."""
        self._settle_unfinished()
        self._background.start()
        log.info(
            "Schedule runner started with %d schedule(s) (version %s).",
            len(self._book["schedules"]),
            self._book["version"],
        )
        return self

    def stop(self, timeout: float = 5) -> None:
        self._background.stop(timeout)

    def _sleep_seconds(self) -> float:
        with self._lock:
            dues = [d for d in self._next.values() if d is not None]
        if not dues:
            return MAX_SLEEP_SECONDS
        left = (min(dues) - self._clock()).total_seconds()
        # A hair past the due instant, so the check sees it as due.
        return min(max(left + 0.02, 0.05), MAX_SLEEP_SECONDS)

    # ---- the set ------------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        return self._book["version"]

    def push(self, data: object) -> tuple[int, bool]:
        """Apply a pushed set; returns ``(applied_version, changed)``; raises PushRejected."""
        now = self._clock()
        version = data.get("version") if isinstance(data, dict) else None
        with self._lock:
            applied = self._book["version"]
            if isinstance(version, int) and not isinstance(version, bool) and applied is not None:
                if version < applied:
                    raise PushRejected(409, f"schedule version {version} is older than the applied {applied}")
            push = parse_push(data, now=now)
            if applied is not None and push["version"] == applied:
                return applied, False
            book = copy.deepcopy(self._book)
            old = {s["id"]: s for s in book["schedules"]}
            state = {}
            for schedule in push["schedules"]:
                through = schedule.pop("handled_through", None)
                previous = old.get(schedule["id"])
                entry = book["state"].get(schedule["id"])
                fresh = (
                    entry is None
                    or previous is None
                    or _definition(previous) != _definition(schedule)
                    or (schedule["enabled"] and not previous["enabled"])
                )
                if fresh:
                    # New, changed or resumed: due times before now are not "missed".
                    entry = {
                        "last_due": format_timestamp(now),
                        "last_handled": (entry or {}).get("last_handled"),
                        "missed_total": (entry or {}).get("missed_total", 0),
                        "lateness_seconds": 0.0,
                    }
                else:
                    entry = dict(entry)
                if through is not None:
                    # The hand-over: due times up to ``through`` were handled by the old engine.
                    entry["last_due"] = through if fresh else max(entry["last_due"], through)
                state[schedule["id"]] = entry
            book.update(
                version=push["version"],
                received=format_timestamp(now),
                catchup_hours=push["catchup_hours"],
                schedules=push["schedules"],
                state=state,
            )
            save_book(self.path, book)
            self._book = book
            self._plan()
        log.info("Applied schedule version %s (%d schedule(s)).", push["version"], len(push["schedules"]))
        self._background.wake()
        return push["version"], True

    def view(self) -> dict:
        """``GET /schedules``: the set with each schedule's next due, last result and lateness."""
        now = self._clock()
        with self._lock:
            out = []
            for schedule in self._book["schedules"]:
                entry = self._book["state"].get(schedule["id"], {})
                due = self._next.get(schedule["id"])
                lateness = entry.get("lateness_seconds", 0.0)
                if due is not None and due <= now:  # due and not handled yet (the runner is behind)
                    lateness = (now - due).total_seconds()
                out.append(
                    {
                        **schedule,
                        "next_due": format_timestamp(due) if due is not None else None,
                        "last_due": entry.get("last_due"),
                        "last_handled": copy.deepcopy(entry.get("last_handled")),
                        "lateness_seconds": round(max(lateness, 0.0), 3),
                        "missed_total": entry.get("missed_total", 0),
                    }
                )
            return {
                "version": self._book["version"],
                "received": self._book["received"],
                "catchup_hours": self._book["catchup_hours"],
                "schedules": out,
            }

    def history(self, after: int = 0, limit: int = 500) -> dict:
        """Outcome records with ``seq`` > ``after``, oldest first (the dashboard's cursor)."""
        with self._lock:
            records = [r for r in self._book["history"] if r["seq"] > after][:limit]
            oldest = self._book["history"][0]["seq"] if self._book["history"] else self._book["next_seq"]
            return {"runs": copy.deepcopy(records), "oldest": oldest, "next_seq": self._book["next_seq"]}

    # ---- due times ----------------------------------------------------------------------

    def _plan(self) -> None:
        """Each schedule's next due time (None: disabled), from its handled-through time."""
        self._next = {}
        for schedule in self._book["schedules"]:
            entry = self._book["state"].get(schedule["id"]) or {}
            last = parse_timestamp(entry.get("last_due")) or self._clock()
            self._next[schedule["id"]] = next_due(schedule, last) if schedule["enabled"] else None

    def check_due(self, now: datetime | None = None) -> list[str]:
        """Handle every schedule due at or before ``now``; returns the ids handled."""
        now = (now or self._clock()).astimezone(timezone.utc)
        starts = []
        with self._lock:
            catchup = timedelta(hours=float(self._book["catchup_hours"]))
            changed = False
            for schedule in self._book["schedules"]:
                due = self._next.get(schedule["id"])
                if due is None or due > now:
                    continue
                try:
                    started = self._handle_due(schedule, now, catchup)
                except Exception:
                    log.exception("Handling schedule %s failed; other schedules are not affected.", schedule["id"])
                    self._next[schedule["id"]] = next_due(schedule, now)  # never retried in a tight loop
                    started = None
                changed = True
                if started is not None:
                    starts.append(started)
            if changed:
                save_book(self.path, self._book)
        for schedule, decision in starts:
            self._start(schedule, decision, now)
        return [s["id"] for s, _ in starts]

    def _handle_due(self, schedule: Mapping, now: datetime, catchup: timedelta):
        """Decide one due schedule (under the lock); returns ``(schedule, decision)`` to start, or None."""
        entry = self._book["state"].setdefault(
            schedule["id"], {"last_due": format_timestamp(now), "missed_total": 0, "last_handled": None}
        )
        decision = decide_due(schedule, parse_timestamp(entry["last_due"]) or now, now, catchup)
        if decision is None:
            self._next[schedule["id"]] = next_due(schedule, now)
            return None
        # Handled before anything starts: a crash now loses this run, never repeats it.
        entry["last_due"] = format_timestamp(decision.latest)
        entry["lateness_seconds"] = round((now - decision.latest).total_seconds(), 3)
        self._next[schedule["id"]] = next_due(schedule, decision.latest)
        if decision.missed:
            self._record_missed(schedule, entry, decision, catchup, now)
        if not decision.run:
            return None
        entry["last_handled"] = {
            "due": format_timestamp(decision.latest),
            "job": None,
            "jobs": [],
            "status": "catch-up" if decision.catch_up else "running",
            "catch_up": decision.catch_up,
            "message": "",
        }
        return schedule, decision

    def _record_missed(self, schedule: Mapping, entry: dict, decision, catchup: timedelta, now: datetime) -> None:
        missed = decision.missed
        first, last = missed[0], missed[-1]
        when = (
            f"at {format_timestamp(last)}"
            if len(missed) == 1
            else f"from {format_timestamp(first)} to {format_timestamp(last)} ({len(missed)} due times)"
        )
        why = (
            "only the most recent missed run is made up"
            if decision.run
            else f"runs more than {float(catchup.total_seconds() / 3600):g} h late are not made up (catchup_hours)"
        )
        message = (
            f"The scheduled {action_text(schedule)} due {when} did not run because the agent was not running; {why}."
        )
        entry["missed_total"] = entry.get("missed_total", 0) + len(missed)
        if not decision.run:
            entry["last_handled"] = {
                "due": format_timestamp(last),
                "job": None,
                "jobs": [],
                "status": "missed",
                "catch_up": False,
                "message": message,
            }
        log.warning("Schedule %s: %s", schedule["id"], message)
        self._add_history(schedule, format_timestamp(last), "missed", None, message, now, missed=len(missed))

    def _start(self, schedule: Mapping, decision, now: datetime) -> None:
        """Start the schedule's job(s) through the agent's own action path and record them."""
        stack, site = schedule["stack"], schedule["site"]
        action = "test_restore" if kind_of(schedule) == "test_restore" else "backup_site"
        options = {"label": wire.SCHEDULED} if action == "backup_site" else {}
        due = format_timestamp(decision.latest)
        failures: list[str] = []
        jobs: list[str] = []
        try:
            sites = list(self._list_sites(stack))
        except Exception as exc:
            sites = []
            if getattr(exc, "status", None) == 404:
                failures.append(f"Stack {stack!r} no longer exists; remove this schedule or restore the stack.")
            else:
                failures.append(f"The sites of stack {stack!r} could not be listed: {getattr(exc, 'message', exc)}")
        targets: list[str] = []
        if not failures:
            if site == EVERY_SITE:
                targets = sites
                if not targets:
                    failures.append(
                        f"Stack {stack!r} has no sites yet, so there was nothing to {action_text(schedule)}."
                    )
            elif site in sites:
                targets = [site]
            else:
                failures.append(
                    f"Site {site!r} is no longer on stack {stack!r}; remove this schedule or restore the site."
                )
        with self._lock:
            handled = self._handled(schedule["id"], due)
            if handled is not None:
                handled["starting"] = True  # outcomes are not summed up until every job is started
        for target in targets:
            try:
                job, _created, _message = self._start_job(action, stack, target, dict(options))
            except Exception as exc:
                failures.append(
                    f"The {action_text(schedule)} of {target} on {stack} could not start: {getattr(exc, 'message', exc)}"
                )
                continue
            jobs.append(job["id"])
            with self._lock:
                # Registered with its schedule at once: the job may end any moment now.
                self._book["jobs"][job["id"]] = {
                    "schedule": schedule["id"],
                    "due": due,
                    "site": target,
                    "catch_up": decision.catch_up,
                }
                handled = self._handled(schedule["id"], due)
                if handled is not None:
                    handled["jobs"].append(job["id"])
                    handled["job"] = handled["job"] or job["id"]
        with self._lock:
            handled = self._handled(schedule["id"], due)
            if handled is not None:
                handled.pop("starting", None)
                if failures:
                    handled["status"] = "failed"
                    handled["message"] = " ".join(failures)
                self._sum_up(handled)
            for failure in failures:
                log.warning("Schedule %s: %s", schedule["id"], failure)
                self._add_history(schedule, due, "failed", None, failure, now)
            save_book(self.path, self._book)
        log.info(
            "Schedule %s due %s: %s %s%s.",
            schedule["id"],
            due,
            action,
            ", ".join(jobs) or "no job",
            " (catch-up)" if decision.catch_up else "",
        )
        # A job that ended before it was recorded (an instant refusal inside the job) is settled here.
        for job_id in jobs:
            job = self._get_job(job_id) if self._get_job is not None else None
            if job is not None and job.get("status") in ("succeeded", "failed"):
                self.job_ended(job)

    # ---- job outcomes -------------------------------------------------------------------

    def job_ended(self, job: Mapping) -> None:
        """The job manager's on_finish: record the outcome of a job a schedule started."""
        with self._lock:
            started = self._book["jobs"].pop(str(job.get("id")), None)
            if started is None:
                return
            status = "succeeded" if job.get("status") == "succeeded" else "failed"
            schedule = next((s for s in self._book["schedules"] if s["id"] == started["schedule"]), None)
            entry = self._book["state"].get(started["schedule"])
            handled = entry.get("last_handled") if entry else None
            if handled is not None and handled.get("due") == started["due"] and job.get("id") in handled["jobs"]:
                handled.setdefault("outcomes", {})[job["id"]] = status
                if status == "failed":
                    handled["message"] = job.get("message") or "The job failed."
                self._sum_up(handled)
            self._add_history(
                schedule or {"id": started["schedule"], "stack": job.get("stack"), "site": started["site"]},
                started["due"],
                status,
                job.get("id"),
                job.get("message") or "",
                self._clock(),
                site=started["site"],
                catch_up=started.get("catch_up", False),
                action=job.get("action"),
            )
            save_book(self.path, self._book)

    def _handled(self, schedule_id: str, due: str) -> dict | None:
        """The schedule's last_handled when it is still the run of ``due`` (else None)."""
        entry = self._book["state"].get(schedule_id)
        handled = entry.get("last_handled") if entry else None
        return handled if handled is not None and handled.get("due") == due else None

    @staticmethod
    def _sum_up(handled: dict) -> None:
        """A failed job fails the run at once; it succeeded when every job of it did."""
        outcomes = handled.get("outcomes") or {}
        if "failed" in outcomes.values():
            handled["status"] = "failed"
        elif (
            not handled.get("starting")
            and handled["status"] != "failed"
            and handled["jobs"]
            and all(outcomes.get(j) == "succeeded" for j in handled["jobs"])
        ):
            handled["status"] = "succeeded"

    def _settle_unfinished(self) -> None:
        """Jobs started before a restart: the job store knows how they ended (failed if interrupted)."""
        with self._lock:
            job_ids = list(self._book["jobs"])
        for job_id in job_ids:
            job = self._get_job(job_id) if self._get_job is not None else None
            if job is None:
                job = {"id": job_id, "status": "failed", "message": "The job is no longer in the agent's job list."}
            if job.get("status") in ("succeeded", "failed"):
                self.job_ended(job)

    def _add_history(
        self, schedule: Mapping, due: str, status: str, job: str | None, message: str, now: datetime, **extra
    ) -> None:
        record = {
            "seq": self._book["next_seq"],
            "at": format_timestamp(now),
            "schedule": schedule.get("id"),
            "kind": kind_of(schedule),
            "stack": schedule.get("stack"),
            "site": extra.pop("site", None) or schedule.get("site"),
            "due": due,
            "status": status,
            "job": job,
            "message": message,
            **extra,
        }
        self._book["next_seq"] += 1
        self._book["history"].append(record)
        del self._book["history"][:-KEEP_HISTORY]

    # ---- metrics ------------------------------------------------------------------------

    def families(self) -> list[Family]:
        lateness = Family(
            "fmappliance_schedule_lateness_seconds",
            "gauge",
            "How late the schedule is: the age of a due time not handled yet, else how late its latest "
            "due time was started (or noticed missed) by the agent.",
        )
        missed = Family(
            "fmappliance_schedule_missed_total",
            "counter",
            "Due times of the schedule recorded missed (the agent was down longer than catchup_hours).",
        )
        for item in self.view()["schedules"]:
            labels = {"schedule": item["id"], "stack": item["stack"], "site": item["site"]}
            lateness.add(item["lateness_seconds"], **labels)
            missed.add(item["missed_total"], **labels)
        return [lateness, missed]
