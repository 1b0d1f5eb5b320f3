"""How old a site's last good backup may be before the dashboard says so.

One rule, in one place: a scheduled site is overdue when its last verified backup is older
than twice the interval of its most frequent schedule; a site without a schedule is
highlighted after 48 hours, and the dashboard warns that no schedule covers it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from fmappliance.schedule_calendar import INTERVALS
from fmappliance.schedule_fields import EVERY_SITE, kind_of
from fmappliance.wire import format_timestamp, parse_timestamp

#: A site without a schedule is highlighted when its last good backup is older than this.
STALE_BACKUP_HOURS = 48
#: Overdue alerts are re-computed at most this often for the same agent answer.
ALERT_CACHE_SECONDS = 15


def overdue_after(frequency: str) -> timedelta:
    """The age at which a backup of a site on this schedule frequency is overdue: twice the interval."""
    return 2 * INTERVALS[frequency]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def age_text(delta: timedelta) -> str:
    """ "5 hours", "3 days": hours below two days, days from then on."""
    hours = delta.total_seconds() / 3600
    return plural(int(hours), "hour") if hours < 48 else plural(int(hours // 24), "day")


def overdue_sites(schedules: Iterable[Mapping], last_backups: Mapping, now: datetime) -> list[dict]:
    """Sites whose last good backup is older than twice their schedule's interval.

    ``last_backups`` maps ``(stack, site)`` to the created time (aware datetime or ISO
    string) of the newest verified backup, or None. An every-site schedule covers the
    sites of its stack found in ``last_backups``. A site with several schedules is judged
    by the most frequent; disabled, invalid and test-restore schedules don't count. A site never
    backed up is overdue once its schedule is older than the limit (or of unknown age).
    """
    limits: dict[tuple, tuple] = {}
    for schedule in schedules:
        if not schedule.get("enabled", True) or schedule.get("invalid") or kind_of(schedule) != "backup":
            continue
        limit = overdue_after(schedule["frequency"])
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
            created = parse_timestamp(created)
        every = {"daily": "every day", "weekly": "every week", "monthly": "every month"}[schedule["frequency"]]
        if created is None:
            since = schedule.get("created_at")
            since = parse_timestamp(since) if isinstance(since, str) else since
            if since is not None and now - since <= limit:
                continue
            message = f"No good backup of {site} on {stack} yet, although its {schedule['frequency']} schedule expects one {every}."
        elif now - created > limit:
            message = (
                f"The last good backup of {site} on {stack} is {age_text(now - created)} old; "
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
                "last_backup": format_timestamp(created) if created is not None else None,
                "limit_hours": int(limit.total_seconds() // 3600),
                "message": message,
            }
        )
    return out


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


class BackupAgeRules:
    """Per-site answers from the stored schedules, cached until a definition changes.

    ``stale_hours(stack, site)`` for the age highlight of each site, ``overdue(payload, now)``
    for the dashboard's alerts, ``unscheduled(payload)`` for its warnings about sites no
    schedule backs up.  ``store`` is the scheduler's ScheduleStore (its ``generation`` moves on
    every definition change).
    """

    def __init__(self, store, *, server: str | None = None, local_name: str = "local"):
        self.store = store
        #: Whose schedules count: this server's (None: the dashboard's own); another server's
        #: ``prod`` is not this one's.
        self.server = server
        self.local_name = local_name
        # (generation, schedules, {(stack, site): hours}, {(stack, site) of paused schedules})
        self._cached: tuple = (None, [], {}, frozenset())
        self._alerts: tuple = (None, None, [])  # (key, payload, alerts)
        self._unscheduled: tuple = (None, None, [])  # (key, payload, warnings)

    def _current(self):
        _, schedules, limits, _ = self._refresh()
        return schedules, limits

    def _refresh(self):
        generation, schedules, limits, paused = self._cached
        if generation != self.store.generation:
            generation = self.store.generation  # read first: a change meanwhile recomputes next time
            # A test restore makes no backup: only backup schedules set how old one may get.
            every = [
                s
                for s in self.store.list()
                if kind_of(s) == "backup" and (s.get("server") or self.local_name) == (self.server or self.local_name)
            ]
            schedules = [s for s in every if s["enabled"] and not s["invalid"]]
            paused = frozenset((s["stack"], s["site"]) for s in every if not s["enabled"])
            limits = {}
            for schedule in schedules:
                hours = overdue_after(schedule["frequency"]).total_seconds() / 3600
                key = (schedule["stack"], schedule["site"])
                limits[key] = min(hours, limits.get(key, hours))
            self._cached = (generation, schedules, limits, paused)
        return generation, schedules, limits, paused

    def stale_hours(self, stack: str, site: str) -> float:
        """Twice the shortest interval of the site's schedules; 48 h for an unscheduled site."""
        _, limits = self._current()
        found = [limits[k] for k in ((stack, site), (stack, EVERY_SITE)) if k in limits]
        return min(found) if found else STALE_BACKUP_HOURS

    def overdue(self, payload, now: datetime) -> list[dict]:
        """Scheduled sites whose last good (verified) backup is older than twice the interval."""
        schedules, _ = self._current()
        if not schedules or not isinstance(payload, dict):
            return []
        key = (id(payload), self.store.generation, int(now.timestamp() // ALERT_CACHE_SECONDS))
        cached_key, cached_payload, alerts = self._alerts
        if cached_key == key and cached_payload is payload:
            return alerts
        last_backups = {}
        for stack in _list(payload.get("stacks")):
            if not isinstance(stack, dict) or not isinstance(stack.get("name"), str):
                continue
            backups = _dict(stack.get("last_backups"))
            for site in [s for s in _list(stack.get("sites")) if isinstance(s, str)]:
                last = _dict(backups.get(site))
                good = last.get("verified") is True
                last_backups[(stack["name"], site)] = parse_timestamp(last.get("created")) if good else None
        # Only sites the agent lists right now: while it cannot see a stack's sites (docker
        # down) "no backup yet" would be wrong, and a vanished site shows as a broken schedule.
        alerts = [a for a in overdue_sites(schedules, last_backups, now) if (a["stack"], a["site"]) in last_backups]
        self._alerts = (key, payload, alerts)
        return alerts

    def unscheduled(self, payload) -> list[dict]:
        """One warning per stack naming its sites that no enabled schedule backs up.

        Only sites the agent lists right now count (as for the overdue alerts). A site covered
        only by a paused schedule is named too: nothing backs it up while the pause lasts.
        """
        generation, _, limits, paused = self._refresh()
        if not isinstance(payload, dict):
            return []
        key = (id(payload), generation)
        cached_key, cached_payload, warnings = self._unscheduled
        if cached_key == key and cached_payload is payload:
            return warnings
        warnings = []
        raw_stacks = payload.get("stacks")
        for stack in raw_stacks if isinstance(raw_stacks, list) else []:
            if not isinstance(stack, dict) or not isinstance(stack.get("name"), str):
                continue
            name = stack["name"]
            raw_sites = stack.get("sites")
            sites = {s for s in raw_sites if isinstance(s, str)} if isinstance(raw_sites, list) else set()
            bare = sorted(s for s in sites if not _covered(limits, name, s))
            if not bare:
                continue
            some_paused = any(_covered(paused, name, s) for s in bare)
            message = (
                f"No backup schedule covers {', '.join(bare)} on {name}: "
                f"{'it is' if len(bare) == 1 else 'they are'} backed up only when someone starts a backup by hand"
                + (" (a schedule that would is paused)." if some_paused else ".")
            )
            warnings.append({"stack": name, "sites": bare, "message": message})
        self._unscheduled = (key, payload, warnings)
        return warnings


def _covered(keys, stack: str, site: str) -> bool:
    return (stack, site) in keys or (stack, EVERY_SITE) in keys
