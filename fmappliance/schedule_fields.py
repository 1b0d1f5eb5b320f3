"""Schedules: what a schedule is, and validation of the add form.

A schedule is a plain dict::

    {"id", "kind" ("backup"|"test_restore"), "stack", "site" ("*" = every site), "frequency" ("daily"|"weekly"|"monthly"),
     "time" ("HH:MM"), "day_of_week" ("mon".."sun" | None), "day_of_month" (1..28 | None),
     "timezone" (IANA name), "enabled", "created_by", "created_at" (ISO UTC | None),
     "source" ("ui"|"config"), "invalid" (None | operator sentence)}

When it fires: fmappliance/schedule_calendar.py.  Who runs it: the agent
(agent/schedules.py), from the set the dashboard pushes (dashboard/schedule_store.py keeps
the operator's edits).  How late a backup may be: dashboard/backup_age.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from fmappliance.schedule_calendar import FREQUENCIES, WEEKDAYS, is_valid_timezone
from fmappliance.wire import SITE_NAME_RULE, STACK_NAME_RULE, is_valid_site_name, is_valid_stack_name

EVERY_SITE = "*"
#: What a schedule does when due: a backup (``backup_site``) or a proof of restorability
#: (``test_restore`` into a throwaway site). Only ``backup`` schedules set backup-age rules.
KINDS = ("backup", "test_restore")
DEFAULT_KIND = "backup"
#: The fields that define a schedule (the add form's fields).
FIELDS = ("kind", "stack", "site", "frequency", "time", "day_of_week", "day_of_month", "timezone")

_TIME = re.compile(r"([01]\d|2[0-3]):([0-5]\d)", re.ASCII)


class ScheduleError(Exception):
    """A schedule change that cannot be made; ``str()`` is a sentence for the operator."""


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def kind_of(schedule: Mapping) -> str:
    """The schedule's kind; rows and config entries from before kinds existed are backups."""
    return schedule.get("kind") or DEFAULT_KIND


def action_text(schedule: Mapping) -> str:
    """ "backup" or "test restore", for operator messages."""
    return "test restore" if kind_of(schedule) == "test_restore" else "backup"


def validate_schedule(fields: Mapping, *, known_stacks: Mapping | None, default_tz: str) -> tuple[dict | None, dict]:
    """Check the add form; return ``(clean, {})`` or ``(None, {field: message})``.

    ``known_stacks`` maps each stack to its site list (None: sites unknown, any well-formed
    name accepted); ``known_stacks=None`` skips the existence checks (agent unreachable).
    Fields not listed here (csrf_token, ...) are ignored.
    """
    errors: dict[str, str] = {}
    kind = _text(fields.get("kind")).lower() or DEFAULT_KIND
    stack = _text(fields.get("stack"))
    site = _text(fields.get("site")) or EVERY_SITE
    frequency = _text(fields.get("frequency")).lower()
    at = _text(fields.get("time"))
    day_of_week = _text(fields.get("day_of_week")).lower()[:3] or None
    day_of_month_text = _text(fields.get("day_of_month"))
    tz = _text(fields.get("timezone")) or default_tz

    if kind not in KINDS:
        errors["kind"] = "Choose what the schedule does: backup or test_restore (restore into a throwaway site)."

    if not stack:
        errors["stack"] = "Pick the stack this schedule is for."
    elif not is_valid_stack_name(stack):
        errors["stack"] = f"A stack name is {STACK_NAME_RULE}."
    elif known_stacks is not None and stack not in known_stacks:
        names = ", ".join(sorted(known_stacks)) or "none configured"
        errors["stack"] = f"There is no stack named {stack!r} (known stacks: {names})."

    if site != EVERY_SITE:
        if not is_valid_site_name(site):
            errors["site"] = f"A site name is {SITE_NAME_RULE}; or use * for every site of the stack."
        elif known_stacks is not None and "stack" not in errors:
            sites = known_stacks.get(stack)
            if sites is not None and site not in sites:
                listed = ", ".join(sites) or "no sites yet"
                errors["site"] = f"Stack {stack!r} has no site {site!r} (its sites: {listed}); or use * for every site."

    if frequency not in FREQUENCIES:
        errors["frequency"] = "Choose how often: daily, weekly or monthly."

    if not _TIME.fullmatch(at):
        errors["time"] = "Give the time as HH:MM on a 24-hour clock, from 00:00 to 23:59 (for example 02:30)."

    day_of_month = None
    if frequency == "weekly":
        if day_of_week not in WEEKDAYS:
            errors["day_of_week"] = "Pick the day of the week: mon, tue, wed, thu, fri, sat or sun."
    else:
        day_of_week = None
    if frequency == "monthly":
        if not re.fullmatch(r"\d{1,2}", day_of_month_text, re.ASCII) or not 1 <= int(day_of_month_text) <= 28:
            errors["day_of_month"] = "Pick a day of the month from 1 to 28 (29-31 don't exist in every month)."
        else:
            day_of_month = int(day_of_month_text)

    if not is_valid_timezone(tz):
        errors["timezone"] = (
            f"Unknown time zone {tz!r}: use an IANA name such as Europe/Berlin, "
            "America/New_York or UTC (or leave it empty for the server's)."
        )

    if errors:
        return None, errors
    return {
        "kind": kind,
        "stack": stack,
        "site": site,
        "frequency": frequency,
        "time": at,
        "day_of_week": day_of_week,
        "day_of_month": day_of_month,
        "timezone": tz,
        "enabled": True,
    }, {}
