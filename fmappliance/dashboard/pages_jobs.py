"""Job progress: ``GET /jobs/<id>`` as a self-polling HTMX panel, a page, or JSON."""

from __future__ import annotations

import logging
import re

import bottle

from fmappliance.dashboard import negotiation, views
from fmappliance.dashboard.agent_client import AgentError

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
POLL_SECONDS = 1
# While the agent does not answer, keep polling, more slowly.
POLL_SECONDS_AGENT_DOWN = 2

log = logging.getLogger(__name__)


def _note_ended(ctx, job: dict) -> None:
    """Tell the scheduler a job it may have started has ended, so a failed scheduled backup
    is notified now rather than at the engine's next poll. Never breaks the page."""
    if (
        ctx.scheduler is None
        or not isinstance(job, dict)
        or job.get("status") not in views.FINAL_JOB_STATES
        or not job.get("id")
    ):
        return
    try:
        ctx.scheduler.note_job(job)
    except Exception:
        log.exception("Could not record the outcome of job %s for the scheduler.", job.get("id"))


def register(app: bottle.Bottle, ctx) -> None:
    @app.get("/jobs/<job_id>")
    @ctx.login_required
    def job(job_id):
        if not JOB_ID.fullmatch(job_id):
            return ctx.fail(400, "That is not a job id.")
        request = bottle.request
        bottle.response.set_header("Cache-Control", "no-store")
        warning, gone = "", False
        try:
            data = ctx.agent.job(job_id)
        except AgentError as exc:
            if negotiation.wants_json(request) or (exc.status == 404 and not negotiation.is_htmx(request)):
                return ctx.fail(exc.status if exc.status in (400, 404) else 502, exc.message)
            if exc.status == 404:
                # A polling panel gets a final answer (a 404 would not be swapped and it would poll on).
                data, gone = {"id": job_id, "status": "unknown", "message": exc.message}, True
            else:
                # Agent briefly away: show it, keep the panel polling.
                data, warning = {"id": job_id, "status": "running"}, exc.message
        else:
            _note_ended(ctx, data)
            if isinstance(data, dict) and data.get("status") in views.FINAL_JOB_STATES:
                # The page refreshes its rows when a job ends: they must not come from the stale list.
                ctx.agent.invalidate()
        if negotiation.wants_json(request):
            return ctx.json_response(data)
        shaped = views.shape_job(data)
        if gone:
            shaped["final"] = True
        poll = POLL_SECONDS_AGENT_DOWN if warning else POLL_SECONDS
        if negotiation.is_htmx(request):
            return ctx.render("job_panel", job=shaped, poll_seconds=poll, warning=warning)
        return ctx.page("job", f"Job {job_id}", job=shaped, warning=warning)
