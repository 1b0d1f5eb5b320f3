"""The schedules page: ``/scheduler`` and its add/remove/enable/disable POSTs.

Pages only change definitions through the service's own :class:`ScheduleStore`; the service
notices the store's ``generation`` at its next tick and pushes the set to the agent, which
runs it.  The page shows the agent's applied version and, per schedule, its next due time,
last result and lateness as the agent reports them (``GET /schedules``).
"""

from __future__ import annotations

import re

import bottle

from fmappliance import wire
from fmappliance.dashboard import negotiation, views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.schedule_store import runs_on
from fmappliance.schedule_calendar import WEEKDAYS
from fmappliance.schedule_fields import (
    EVERY_SITE,
    FIELDS,
    ScheduleError,
    kind_of,
    validate_schedule,
)
from fmappliance.wire import parse_timestamp

SCHEDULE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
DAY_NAMES = dict(zip(WEEKDAYS, ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")))
MAX_JSON_BODY = 64 * 1024


# --------------------------------------------------------------------------------------
# Shaping for the templates
# --------------------------------------------------------------------------------------


def describe(schedule: dict) -> str:
    """ "daily at 02:30", "weekly on Sunday at 02:30", "monthly on day 1 at 02:30"."""
    frequency = schedule["frequency"]
    if frequency == "weekly":
        return f"weekly on {DAY_NAMES.get(str(schedule.get('day_of_week')), schedule.get('day_of_week'))} at {schedule['time']}"
    if frequency == "monthly":
        return f"monthly on day {schedule.get('day_of_month')} at {schedule['time']}"
    return f"daily at {schedule['time']}"


def kind_prefix(schedule: dict) -> str:
    """ "test restore of " for a test-restore schedule; nothing for a backup (the default)."""
    return "test restore of " if kind_of(schedule) == "test_restore" else ""


def site_label(site: str) -> str:
    return "every site" if site == EVERY_SITE else site


def _zone(name: str):
    from zoneinfo import ZoneInfo  # loads with the first schedule page, not at start

    try:
        return ZoneInfo(name)
    except Exception:  # an invalid config zone: show UTC rather than fail the page
        return ZoneInfo("UTC")


def _in_zone(moment, zone) -> str:
    if isinstance(moment, str):
        moment = parse_timestamp(moment)
    if moment is None:
        return ""
    return moment.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def _run_view(run: dict, zone) -> dict:
    result, job_status = run.get("result"), run.get("job_status")
    if result == "submitted":
        label = (
            job_status
            if job_status in wire.FINISHED
            else ("running" if job_status in wire.UNFINISHED else "handed to the agent")
        )
    else:
        label = result or ""
    badge = {"succeeded": "badge-ok", "failed": "badge-bad", "missed": "badge-bad"}.get(
        label, "badge-warn" if label != "skipped" else "badge-unknown"
    )
    return {
        "site": run.get("site") or "",
        "time": _in_zone(run.get("started"), zone),
        "result": label,
        "badge": badge,
        "job_id": str(run.get("job_id") or ""),
        "qjob_id": views.url_part(run.get("job_id") or ""),
        "message": str(run.get("message") or ""),
        "catch_up": bool(run.get("catch_up")),
    }


def shape_schedule(item: dict) -> dict:
    zone = _zone(item["timezone"])
    status = item["status"]
    return {
        "id": item["id"],
        "qid": views.url_part(item["id"]),
        "kind": kind_of(item),
        "kind_label": "Test restore" if kind_of(item) == "test_restore" else "Backup",
        "stack": item["stack"],
        "site": site_label(item["site"]),
        "when": describe(item),
        "timezone": item["timezone"],
        "next_runs": [_in_zone(t, zone) for t in item.get("next_runs") or []],
        "last_runs": [_run_view(r, zone) for r in item.get("last_runs") or []],
        "status": status,
        "badge": {"ok": "badge-ok", "disabled": "badge-unknown", "broken": "badge-bad"}.get(status, "badge-unknown"),
        "reason": item.get("broken_reason") or "",
        "source": item["source"],
        "enabled": item["enabled"],
        "removable": item["source"] == "ui",
        "created_by": item.get("created_by") or "",
        # From the agent, which runs the schedule (empty while it does not answer).
        "next_due": _in_zone(item.get("next_due"), zone) if item.get("next_due") else "",
        "lateness": _lateness_text(item.get("lateness_seconds")),
        "missed_total": item.get("missed_total") or 0,
    }


def _lateness_text(seconds) -> str:
    """ "on time" up to a minute late, else "3 min late" / "2.5 h late"; empty when unknown."""
    if not isinstance(seconds, (int, float)):
        return ""
    if seconds < 60:
        return "on time"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min late"
    return f"{seconds / 3600:.1f} h late"


def public_schedule(item: dict) -> dict:
    """A status item as the JSON answers show it."""
    return {k: v for k, v in item.items() if k != "invalid"}


# --------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------


def register(app: bottle.Bottle, ctx) -> None:
    scheduler = ctx.scheduler
    store = scheduler.store

    def page_server() -> str | None:
        """The server of this page (``/s/<server>/scheduler``); None: the dashboard's own."""
        return None if ctx.is_local_request() else ctx.server()

    def known_stacks():
        """{stack: sites or None (unknown)} from the agent, or None when it cannot be asked."""
        try:
            payload = ctx.agent.stacks()
        except AgentError:
            return None
        known = {}
        for stack in payload.get("stacks") or []:
            if isinstance(stack, dict) and isinstance(stack.get("name"), str):
                sites = stack.get("sites")
                usable = isinstance(sites, list) and stack.get("status") != "unknown"
                known[stack["name"]] = [str(s) for s in sites] if usable else None
        return known

    def default_values(known) -> dict:
        names = sorted(known) if known else sorted(ctx.config.get("stacks") or {})
        return {
            "kind": "backup",
            "stack": names[0] if len(names) == 1 else "",
            "site": EVERY_SITE,
            "frequency": "daily",
            "time": "02:00",
            "day_of_week": "sun",
            "day_of_month": "1",
            "timezone": store.default_tz,
        }

    def body_values(*, known=None, values=None, errors=None, notice=None) -> dict:
        if known is None:
            known = known_stacks()
        items = scheduler.status(ctx.now(), page_server())
        stack_names = sorted(known) if known is not None else sorted(ctx.config.get("stacks") or {})
        site_names = sorted({s for sites in (known or {}).values() for s in (sites or [])})
        return {
            "schedules": [shape_schedule(i) for i in items],
            "values": values or default_values(known),
            "errors": errors or {},
            "notice": notice,
            "stack_names": stack_names,
            "site_names": site_names,
            "weekdays": [(d, DAY_NAMES[d]) for d in WEEKDAYS],
            "default_tz": store.default_tz,
            "agent_down": known is None,
            "applied": scheduler.applied(page_server()),
        }

    def answer_page(status: int = 200, **kw):
        values = body_values(**kw)
        if negotiation.is_htmx(bottle.request):
            body = ctx.render("scheduler", csrf_token=ctx.session().csrf_token, **values)
        else:
            body = ctx.page("scheduler", "Schedules", active="scheduler", **values)
        return bottle.HTTPResponse(
            body, status=status, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
        )

    def changed(message: str, schedule: dict | None):
        """Answer a successful change in the shape the request wants."""
        request = bottle.request
        if negotiation.wants_json(request):
            return ctx.json_response({"success": True, "message": message, "schedule": schedule})
        if negotiation.is_htmx(request):
            return answer_page(notice=("ok", message))
        ctx.sessions.add_flash(ctx.session(), "ok", message)
        return bottle.HTTPResponse(status=303, headers={"Location": "/scheduler"})  # re-prefixed on /s/<server>/

    def audit(action: str, target: str, result: str) -> None:
        ctx.audit.record(user=ctx.user(), address=ctx.client_address(), action=action, target=target, result=result)

    def status_item(schedule_id: str):
        return next((i for i in scheduler.status(ctx.now(), page_server()) if i["id"] == schedule_id), None)

    @app.get("/scheduler")
    @ctx.login_required
    def scheduler_page():
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(
                {
                    "schedules": [public_schedule(i) for i in scheduler.status(ctx.now(), page_server())],
                    "agent": scheduler.applied(page_server()),
                }
            )
        return answer_page()

    @app.post("/scheduler/add")
    @ctx.protected_post
    def add():
        fields, status, problem = negotiation.read_fields(bottle.request, FIELDS, max_bytes=MAX_JSON_BODY)
        if fields is None:
            return ctx.fail(status, problem)
        known = known_stacks()
        clean, errors = validate_schedule(fields, known_stacks=known, default_tz=store.default_tz)
        target = (
            f"{str(fields.get('stack') or '').strip() or '?'}/{str(fields.get('site') or '').strip() or EVERY_SITE}"
        )
        if errors:
            audit("schedule_add", target, "invalid: " + ", ".join(errors))
            message = "The schedule was not added: " + " ".join(errors.values())
            if negotiation.wants_json(bottle.request):
                return ctx.json_response({"success": False, "message": message, "errors": errors}, 400)
            values = {k: "" if fields.get(k) is None else str(fields.get(k)) for k in FIELDS}
            return answer_page(
                400,
                known=known,
                values=values,
                errors=errors,
                notice=("error", "The schedule was not added; correct the fields marked below."),
            )
        # Under /s/<server>/ the schedule is that server's: its agent runs it (checked against its stacks above).
        schedule = store.add({**clean, "server": page_server() or ""}, ctx.user())
        audit("schedule_add", f"{schedule['stack']}/{schedule['site']}", "ok")
        item = status_item(schedule["id"]) or schedule
        first = shape_schedule(item)["next_runs"][:1] if item.get("next_runs") else []
        message = (
            f"Schedule added: {kind_prefix(schedule)}{site_label(schedule['site'])} on {schedule['stack']}, "
            f"{describe(schedule)} "
            f"({schedule['timezone']})" + (f"; next run {first[0]}." if first else ".")
        )
        return changed(message, public_schedule(item))

    def change(schedule_id: str, verb: str):
        action = f"schedule_{verb}"
        schedule = store.get(schedule_id) if SCHEDULE_ID.fullmatch(schedule_id) else None
        if schedule is not None and not runs_on(schedule, page_server(), ctx.config["fleet"]["local_name"]):
            schedule = None  # another server's schedule: changed from that server's page only
        if schedule is None:
            audit(action, schedule_id, "refused: no such schedule")
            return ctx.fail(404, "There is no such schedule; it may have been removed already. Reload the page.")
        target = f"{schedule['stack']}/{schedule['site']}"
        try:
            done = store.remove(schedule_id) if verb == "remove" else store.set_enabled(schedule_id, verb == "enable")
        except ScheduleError as exc:
            audit(action, target, "refused: declared in config.yaml")
            return ctx.fail(409, str(exc))
        if not done:
            audit(action, target, "refused: no such schedule")
            return ctx.fail(404, "There is no such schedule; it may have been removed already. Reload the page.")
        audit(action, target, "ok")
        what = f"{kind_prefix(schedule)}{site_label(schedule['site'])} on {schedule['stack']}, {describe(schedule)}"
        if verb == "remove":
            return changed(f"Schedule removed: {what}.", public_schedule({**schedule, "status": "removed"}))
        item = status_item(schedule_id)
        word = "resumed" if verb == "enable" else "paused"
        return changed(f"Schedule {word}: {what}.", public_schedule(item) if item else None)

    @app.post("/scheduler/remove/<schedule_id>")
    @ctx.protected_post
    def remove(schedule_id):
        return change(schedule_id, "remove")

    @app.post("/scheduler/enable/<schedule_id>")
    @ctx.protected_post
    def enable(schedule_id):
        return change(schedule_id, "enable")

    @app.post("/scheduler/disable/<schedule_id>")
    @ctx.protected_post
    def disable(schedule_id):
        return change(schedule_id, "disable")
