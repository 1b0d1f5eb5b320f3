"""Calendar rules of schedules: when a daily/weekly/monthly schedule fires (DST included), and
what to do with the due times that passed (:func:`decide_due`: on time, catch-up or missed).

Shared by the agent, which runs the schedules, and the dashboard, which shows and edits them,
so both always agree.  Pure functions of a schedule's fields (frequency, time, day_of_week,
day_of_month, timezone) and instants; no storage, no clock.  zoneinfo does the zone rules;
the DST choices for repeated and skipped wall times are documented on :func:`local_instant`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # zoneinfo (and sysconfig under it) loads with the first schedule, not at start
    from zoneinfo import ZoneInfo

FREQUENCIES = ("daily", "weekly", "monthly")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: The nominal interval of each frequency (a month counts as 31 days).
INTERVALS = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=31)}

_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", re.ASCII)
# Present in the zoneinfo directory but not time zones anyone means.
_NOT_ZONES = {"localtime", "Factory", "posixrules"}


# ---- time zones ------------------------------------------------------------------------


#: Directories of the zone database that repeat the zones under other rules (available_timezones skips them too).
_NOT_ZONE_DIRS = ("posix/", "right/")


#: CPython's compiled-in zoneinfo.TZPATH on Linux distributions (sysconfig's TZPATH).
_DEFAULT_TZPATH = ("/usr/share/zoneinfo", "/usr/lib/zoneinfo", "/usr/share/lib/zoneinfo", "/etc/zoneinfo")


def _tz_path() -> tuple[str, ...]:
    """zoneinfo.TZPATH, without importing zoneinfo when it is not loaded yet.

    Importing it reads sysconfig's build variables (about 0.35 MB kept resident), and the
    server's zone is checked at every start of both services, also with no schedule at all.
    A TZPATH other than the usual one only sends the check on to ZoneInfo, which knows it.
    """
    loaded = sys.modules.get("zoneinfo")
    if loaded is not None:
        return tuple(loaded.TZPATH)
    configured = os.environ.get("PYTHONTZPATH")
    if configured is not None:
        return tuple(path for path in configured.split(os.pathsep) if os.path.isabs(path))
    return _DEFAULT_TZPATH


def _zone_file_exists(name: str) -> bool:
    """The system zone database has ``name`` (a TZif file on zoneinfo.TZPATH).

    Not zoneinfo.available_timezones(): it lists the whole database and loads importlib.resources
    (about 1 MB kept resident) at every start of both services.
    """
    for root in _tz_path():
        try:
            with open(os.path.join(root, name), "rb") as handle:
                if handle.read(4) == b"TZif":
                    return True
        except OSError:
            continue
    return False


def is_valid_timezone(name: object) -> bool:
    """True for an IANA zone name this system knows (Europe/Berlin, UTC, ...)."""
    if not isinstance(name, str) or not _TZ_NAME.fullmatch(name) or name in _NOT_ZONES:
        return False
    if name.startswith(_NOT_ZONE_DIRS):
        return False
    if _zone_file_exists(name):
        return True
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:  # not in the system database: zoneinfo may still know it (the tzdata package)
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def server_timezone() -> str:
    """The server's IANA zone name: $TZ, /etc/timezone, the /etc/localtime link, else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        candidates.append(Path("/etc/timezone").read_text().strip())
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    # Only an abbreviation like "UTC" or "CET" is available here; usable when it is a zone name.
    candidates.append(datetime.now().astimezone().tzname() or "")
    for name in candidates:
        if name and is_valid_timezone(name):
            return name
    return "UTC"


# ---- next runs -------------------------------------------------------------------------


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The one instant a schedule fires on ``day`` at wall time ``at`` in ``zone``.

    DST rule (documented for the operator too):
    - wall time repeated (fall back, e.g. 02:30 twice): the FIRST occurrence (fold=0);
    - wall time skipped (spring forward, e.g. 02:30 does not exist): the first valid
      instant after the gap, i.e. the moment the clocks jump (03:00 in Europe/Berlin and
      America/New_York). Either way a schedule fires exactly once on that day.
    """
    wall = datetime.combine(day, at, tzinfo=zone)  # fold=0
    utc = wall.astimezone(timezone.utc)
    if utc.astimezone(zone).replace(tzinfo=None) == wall.replace(tzinfo=None):
        return utc.astimezone(zone)
    # In a gap. With fold=0 the pre-transition offset is used, with fold=1 the post one, so
    # the transition lies between those two UTC readings: binary-search it to the second.
    lo = wall.replace(fold=1).astimezone(timezone.utc)  # before the jump
    hi = utc  # after the jump
    after_offset = hi.astimezone(zone).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(zone).utcoffset() == after_offset:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0).astimezone(zone)


def _matches(schedule: Mapping, day: date) -> bool:
    if schedule["frequency"] == "weekly":
        return day.weekday() == WEEKDAYS.index(schedule["day_of_week"])
    if schedule["frequency"] == "monthly":
        return day.day == int(schedule["day_of_month"])
    return True


def iter_runs(schedule: Mapping, after: datetime) -> Iterator[datetime]:
    """Run instants strictly after ``after`` (aware), in the schedule's zone, forever."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(schedule["timezone"])
    # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time, ignoring fold.
    after = after.astimezone(timezone.utc)
    hour, minute = (int(p) for p in schedule["time"].split(":"))
    at = time(hour, minute)
    # Start a day early: a run on the previous local date can still be after ``after``
    # only in theory (offsets are < 1 day), but it keeps the edge cases obvious.
    day = after.astimezone(zone).date() - timedelta(days=1)
    while True:
        if _matches(schedule, day):
            instant = local_instant(day, at, zone)
            if instant > after:
                yield instant
        day += timedelta(days=1)


def next_runs(schedule: Mapping, after: datetime, count: int = 3) -> list[datetime]:
    """The next ``count`` run times strictly after ``after``, aware, in the schedule's zone."""
    runs = iter_runs(schedule, after)
    return [next(runs) for _ in range(count)]


def runs_between(schedule: Mapping, start: datetime, end: datetime, limit: int = 10000) -> list[datetime]:
    """Run instants in ``(start, end]`` (at most ``limit``, the latest kept)."""
    out: list[datetime] = []
    end = end.astimezone(timezone.utc)
    for instant in iter_runs(schedule, start):
        if instant > end:
            break
        out.append(instant)
        if len(out) > limit:
            out.pop(0)
    return out


# ---- what to do with passed due times --------------------------------------------------

#: A due time handled this late is still an ordinary run (a busy machine, a short suspend).
#: Later than this it is a catch-up.
ON_TIME = timedelta(minutes=2)


@dataclass(frozen=True)
class DueDecision:
    """What to do with the due times of one schedule in ``(last_due, now]``.

    ``latest`` is handled now (it becomes the new "handled through"); it runs when ``run``
    (late: ``catch_up``); ``missed`` are the due times recorded missed, oldest first (all of
    them when ``latest`` is too old to run, else those before it).
    """

    latest: datetime
    run: bool
    catch_up: bool
    missed: tuple[datetime, ...]
    #: When the decision was taken (UTC): ``now - latest`` is how late ``latest`` is handled.
    now: datetime


def decide_due(schedule: Mapping, last_due: datetime, now: datetime, catchup: timedelta) -> DueDecision | None:
    """The rule for passed due times (None: nothing due in ``(last_due, now]``).

    Of the due times since the last handled one only the latest can run: on time (within
    :data:`ON_TIME`), as a catch-up (within ``catchup``) or not at all; the others are missed.
    A due time is handled once: the caller stores ``latest`` as handled before starting it.
    """
    now = now.astimezone(timezone.utc)
    dues = runs_between(schedule, last_due, now)
    if not dues:
        return None
    latest = dues[-1]
    lateness = now - latest
    run = lateness <= catchup or lateness <= ON_TIME
    catch_up = run and lateness > ON_TIME
    missed = dues[:-1] if run else dues
    return DueDecision(latest, run, catch_up, tuple(missed), now)


def next_due(schedule: Mapping, after: datetime) -> datetime:
    """The first due time strictly after ``after``, in UTC."""
    return next_runs(schedule, after, 1)[0].astimezone(timezone.utc)
