"""The dashboard's ``GET /metrics``: the agent's series relayed as they are, plus the scheduler's.

Prometheus needs neither a session nor the agent's token: it sends the scrape token of
``dashboard.metrics_token_file``, compared in constant time.  Scheduler series come from the
schedule store (a few small SQLite reads), never from the agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from fmappliance.prometheus_text import Family, render


@dataclass(frozen=True)
class ScheduleTimeliness:
    schedule: str
    stack: str
    site: str
    lateness_seconds: float
    missed: int


def schedule_timeliness(
    schedules: list[dict], last_runs: dict, overdue_since: dict, missed: dict, now: datetime
) -> list[ScheduleTimeliness]:
    """Per schedule: how late it is, and how many of its runs were recorded missed.

    Lateness is how long ago a due time passed that the scheduler has not handled yet (its
    loop is stuck, or the dashboard is down and catching up); otherwise how late the latest
    due time was handled (the hand-off time minus the due time: a catch-up shows hours, a
    missed run the time it was noticed).  ``last_runs``: schedule id -> newest run row;
    ``overdue_since``: schedule id -> the due time waiting to be handled (or None);
    ``missed``: schedule id -> number of missed rows.
    """
    now = now.astimezone(timezone.utc)
    rows = []
    for schedule in schedules:
        waiting = overdue_since.get(schedule["id"])
        if waiting is not None and waiting <= now:
            lateness = (now - waiting).total_seconds()
        else:
            run = last_runs.get(schedule["id"])
            lateness = _handled_late(run) if run else 0.0
        rows.append(
            ScheduleTimeliness(
                schedule["id"],
                schedule["stack"],
                schedule["site"],
                max(lateness, 0.0),
                int(missed.get(schedule["id"], 0)),
            )
        )
    return rows


def _handled_late(run: dict) -> float:
    try:
        due = datetime.fromisoformat(run["due"])
        started = datetime.fromisoformat(run["started"])
    except (KeyError, TypeError, ValueError):
        return 0.0
    return (started - due).total_seconds()


def scheduler_families(rows: list[ScheduleTimeliness]) -> list[Family]:
    lateness = Family(
        "fmappliance_schedule_lateness_seconds",
        "gauge",
        "How late the schedule is: the age of a due time not handled yet, else how late its latest "
        "due time was handed to the agent (or noticed missed).",
    )
    missed = Family(
        "fmappliance_schedule_missed_total",
        "counter",
        "Times a due backup of the schedule was recorded missed (the dashboard was down too long; "
        "one record may cover several due times).",
    )
    for row in rows:
        labels = {"schedule": row.schedule, "stack": row.stack, "site": row.site}
        lateness.add(row.lateness_seconds, **labels)
        missed.add(row.missed, **labels)
    return [lateness, missed]


def dashboard_metrics_text(agent_text: str | None, rows: list[ScheduleTimeliness]) -> str:
    """The agent's exposition (None: unreachable) followed by the dashboard's own families."""
    agent_up = Family("fmappliance_agent_up", "gauge", "1 when the dashboard could read the agent's metrics, else 0.")
    agent_up.add(1 if agent_text is not None else 0)
    own = render([agent_up, *scheduler_families(rows)])
    if not agent_text:
        return own
    return agent_text + ("" if agent_text.endswith("\n") else "\n") + own
