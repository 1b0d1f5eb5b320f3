"""The audit log page: stored in UTC, shown in the server's time zone, a page at a time.

Filters (all optional, in the query so a filtered page can be bookmarked): ``user`` and
``action`` (exact), ``target`` (part of it), ``day`` (YYYY-MM-DD in the server's time zone),
``page`` (1 = newest).  A row that started a job shows how that job ended (asked from
the agent: its recent jobs in one request, a few older ones by id; ended ones are remembered).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import urllib.parse

import bottle

from fmappliance.dashboard import negotiation, views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.wire import format_timestamp

PAGE_SIZE = 100
#: The agent's recent jobs asked for in one request for the outcomes, then at most this many
#: older ones one by one (a page of old rows fills in over a few views; ended ones are kept).
OUTCOME_LIST = 50
OUTCOME_LOOKUPS = 20
FILTERS = ("user", "action", "target", "day")

log = logging.getLogger(__name__)


def day_range(day: str) -> tuple[str, str] | None:
    """A local day as the [since, until) UTC timestamps the audit rows are stored in."""
    try:
        start = dt.datetime.strptime(day, "%Y-%m-%d")
    except ValueError:
        return None
    local = start.astimezone()  # this day's midnight in the server's time zone
    end = (start + dt.timedelta(days=1)).astimezone()
    return format_timestamp(local.timestamp()), format_timestamp(end.timestamp())


def register(app: bottle.Bottle, ctx) -> None:
    # An ended job's outcome never changes: kept here, a page view asks the agent only about
    # jobs it has not seen end (its list answers with every job's output, so it is kept short).
    ended: dict[str, dict] = {}
    lock = threading.Lock()

    def is_local(row) -> bool:
        return row.get("server", "") in ("", ctx.config["fleet"]["local_name"])

    def outcomes(rows) -> dict[str, dict]:
        # Only this server's jobs: another server's job ids mean nothing to the local agent.
        wanted = {r["job_id"] for r in rows if r["job_id"] and is_local(r)}
        with lock:
            known = {i: ended[i] for i in wanted if i in ended}
        missing = wanted - known.keys()
        if not missing:
            return known
        try:
            found = {str(j.get("id")): j for j in ctx.agent.jobs(limit=OUTCOME_LIST) if isinstance(j, dict)}
            for job_id in sorted(missing - found.keys())[:OUTCOME_LOOKUPS]:
                try:
                    found[job_id] = ctx.agent.job(job_id)
                except AgentError as exc:
                    if exc.status != 404:
                        raise
        except AgentError as exc:
            log.info("audit page without some job outcomes: %s", exc.message)
            return known
        fresh = {i: found[i] for i in missing if isinstance(found.get(i), dict)}
        with lock:
            if len(ended) > 10_000:
                ended.clear()
            ended.update({i: j for i, j in fresh.items() if j.get("status") in views.FINAL_JOB_STATES})
        return {**known, **fresh}

    @app.get("/audit")
    @ctx.login_required
    def audit_page():
        query = bottle.request.query
        chosen = {name: (query.getunicode(name) or "").strip()[:200] for name in FILTERS}
        raw_page = query.get("page") or "1"
        page = int(raw_page) if raw_page.isdigit() and 0 < int(raw_page) < 100_000 else 1
        problem = ""
        since = until = ""
        if chosen["day"]:
            found = day_range(chosen["day"])
            if found is None:
                problem = f"{chosen['day']!r} is not a day; write it as YYYY-MM-DD."
            else:
                since, until = found
        rows, total = ctx.audit.search(
            user=chosen["user"],
            action=chosen["action"],
            target=chosen["target"],
            since=since,
            until=until,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            if problem:
                return ctx.json_response({"success": False, "message": problem}, 400)
            return ctx.json_response(
                {"events": rows, "total": total, "page": page, "page_size": PAGE_SIZE, "more": page * PAGE_SIZE < total}
            )
        jobs = outcomes(rows)
        for row in rows:
            row["local_time"] = views.local_time(row["time"])
            job = jobs.get(row["job_id"]) if row["job_id"] and is_local(row) else None
            row["outcome"] = views.shape_job(job) if job else None
            # A job on another server is shown by that server's pages.
            prefix = "" if is_local(row) else f"/s/{views.url_part(row['server'])}"
            row["job_href"] = f"{prefix}/jobs/{views.url_part(row['job_id'])}" if row["job_id"] else ""

        def link(to_page: int) -> str:
            kept = {k: v for k, v in chosen.items() if v}
            return "/audit?" + urllib.parse.urlencode({**kept, "page": to_page})

        zone = dt.datetime.now().astimezone().tzname() or "local"
        first = (page - 1) * PAGE_SIZE + 1 if rows else 0
        return ctx.page(
            "audit",
            "Audit log",
            active="audit",
            rows=rows,
            zone=zone,
            chosen=chosen,
            actions=ctx.audit.actions(),
            problem=problem,
            total=total,
            first=first,
            last=first + len(rows) - 1 if rows else 0,
            newer=link(page - 1) if page > 1 else "",
            older=link(page + 1) if page * PAGE_SIZE < total else "",
            filtered=any(chosen.values()),
        )
