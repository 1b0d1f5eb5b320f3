"""The dashboard, the stack page and the stack/site actions."""

from __future__ import annotations

import bottle

from fmappliance import actions_table
from fmappliance.dashboard import negotiation, views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.wire import is_valid_site_name, is_valid_stack_name

#: The button verb in a form's URL -> the agent action it asks for (the verbs of fmappliance/actions_table.py).
STACK_VERBS = actions_table.buttons(actions_table.STACK)
SITE_VERBS = actions_table.buttons(actions_table.SITE)
# The rendered stack list is shared by all sessions; each page gets its own token swapped in.
CSRF_PLACEHOLDER = "@@CSRF-TOKEN@@"
BODY_MARKER = "@@STACKS@@"
# Ages on the page ("3 min ago") may be this stale before the list is re-rendered.
RENDER_CACHE_SECONDS = 15


def _alternatives(verbs: dict[str, str]) -> str:
    # bottle's re filter: a path segment that is one of the verbs (they are letters and '-').
    return "|".join(sorted(verbs, key=len, reverse=True))


def run_action(ctx, action: str, stack: str, site: str | None, return_to: str):
    """Send one action to the agent and answer in the shape the request wants."""
    request = bottle.request
    session = ctx.session()
    target = stack if site is None else f"{stack}/{site}"
    job, answer = None, {}
    try:
        answer = ctx.agent.action(action, stack, site)
        success, message, job = True, str(answer.get("message") or "Started."), answer.get("job")
        if answer.get("duplicate"):
            message = (
                f"{message} (already queued or running; showing that job)"
                if answer.get("message")
                else "Already queued or running; showing that job."
            )
        status = 202
        result = "duplicate" if answer.get("duplicate") else "started"
    except AgentError as exc:
        success, message = False, exc.message
        status = exc.status if exc.status in (400, 403, 404, 409) else 502
        result = f"failed: {exc.message}"
    job_id = job.get("id") if isinstance(job, dict) else None
    ctx.audit.record(
        user=session.user, address=ctx.client_address(), action=action, target=target, result=result, job_id=job_id
    )

    if negotiation.wants_json(request):
        return ctx.json_response({"success": success, "message": message, "job": job}, status)
    if negotiation.is_htmx(request):
        shaped = views.shape_job(job) if isinstance(job, dict) else None
        duplicate = bool(success and answer.get("duplicate"))
        return ctx.render("action_result", success=success, message=message, job=shaped, duplicate=duplicate)
    ctx.sessions.add_flash(session, "ok" if success else "error", message + (f" (job {job_id})" if job_id else ""))
    return bottle.HTTPResponse(status=303, headers={"Location": negotiation.safe_local_path(return_to)})


def register(app: bottle.Bottle, ctx) -> None:
    # Per role (the buttons differ), one entry (key, payload, pieces), replaced as a whole
    # so threads never see half of it.
    render_cache: dict[tuple, tuple] = {}

    def stacks_html(payload, failed: bool, now) -> list[bytes]:
        # Re-render only when the agent data changed or the ages moved on, and keep the
        # result encoded: with 30 stacks x 5 sites this is most of the page, and the
        # benchmark goal (500 req/s) leaves no room for re-rendering it per request.
        # Per role: the buttons differ.  A schedule change moves the age limits, so the
        # schedules' generation is part of the key.
        # Per server too (/s/<server>/): its buttons may be disabled, and its age rules are its own.
        role = (ctx.role(), ctx.server())
        key = (id(payload), int(now.timestamp() // RENDER_CACHE_SECONDS), failed, ctx.scheduler.store.generation)
        cached_key, cached_payload, cached_pieces = render_cache.get(role, (None, None, []))
        if cached_key == key and cached_payload is payload:
            return cached_pieces
        stacks = [views.with_buttons(ctx.can, s) for s in views.shape_stacks(payload, now, ctx.backup_age.stale_hours)]
        html = ctx.render(
            "stacks_block", stacks=stacks, failed=failed, csrf_token=CSRF_PLACEHOLDER, return_to="/dashboard"
        )
        pieces = html.encode().split(CSRF_PLACEHOLDER.encode())
        render_cache[role] = (key, payload, pieces)
        return pieces

    @app.get("/dashboard")
    @ctx.login_required
    def dashboard():
        banner = ""
        try:
            payload = ctx.agent.stacks()
        except AgentError as exc:
            payload, banner = None, exc.message
        if negotiation.wants_json(bottle.request):
            if payload is None:
                return ctx.json_response({"success": False, "message": banner}, 502)
            return ctx.json_response(payload)
        now = ctx.now()
        block = ctx.session().csrf_token.encode().join(stacks_html(payload, payload is None, now))
        alerts = [
            {**alert, "href": f"/backups/{views.url_part(alert['stack'])}/{views.url_part(alert['site'])}"}
            for alert in (ctx.backup_age.overdue(payload, now) if payload is not None else [])
        ]
        unscheduled = ctx.backup_age.unscheduled(payload) if payload is not None else []
        bottle.response.set_header("Cache-Control", "no-store")
        page = ctx.page(
            "dashboard",
            "Dashboard",
            banner=banner,
            active="dashboard",
            stacks_html=BODY_MARKER,
            disk=views.shape_disk((payload or {}).get("disk")),
            alerts=alerts,
            unscheduled=unscheduled,
        )
        head, _, tail = page.partition(BODY_MARKER)
        return b"".join((head.encode(), block, tail.encode()))

    @app.get("/stack/<name>")
    @ctx.login_required
    def stack_page(name):
        if not is_valid_stack_name(name):
            return ctx.fail(400, "That is not a valid stack name.")
        banner, stack, jobs = "", None, []
        try:
            payload = ctx.agent.stack(name)
            stack = payload.get("stack")
            jobs = payload.get("jobs") if isinstance(payload.get("jobs"), list) else []
        except AgentError as exc:
            if exc.status == 404:
                return ctx.fail(404, exc.message or f"There is no stack named {name}.")
            banner = exc.message
        if negotiation.wants_json(bottle.request):
            if stack is None:
                return ctx.json_response({"success": False, "message": banner}, 502)
            return ctx.json_response({"stack": stack, "jobs": jobs})
        now = ctx.now()
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "stack",
            name,
            banner=banner,
            name=name,
            stack=views.with_buttons(ctx.can, views.shape_stack(stack, now, ctx.backup_age.stale_hours))
            if isinstance(stack, dict)
            else None,
            jobs=[views.shape_job(j, now) for j in jobs if isinstance(j, dict)],
            return_to="/stack/" + views.url_part(name),
        )

    def form_return_to(default: str) -> str:
        if (bottle.request.content_type or "").startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            return bottle.request.forms.getunicode("return_to", default="") or default
        return default

    @app.post("/stack/<name>/<verb:re:" + _alternatives(STACK_VERBS) + ">")
    @ctx.protected_post
    def stack_action(name, verb):
        if not is_valid_stack_name(name):
            return ctx.fail(400, "That is not a valid stack name.")
        return run_action(ctx, STACK_VERBS[verb], name, None, form_return_to("/dashboard"))

    @app.post("/site/<stack>/<site>/<verb:re:" + _alternatives(SITE_VERBS) + ">")
    @ctx.protected_post
    def site_action(stack, site, verb):
        if not is_valid_stack_name(stack):
            return ctx.fail(400, "That is not a valid stack name.")
        if not is_valid_site_name(site):
            return ctx.fail(400, "That is not a valid site name.")
        return run_action(ctx, SITE_VERBS[verb], stack, site, form_return_to("/dashboard"))
