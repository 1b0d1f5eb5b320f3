"""``GET /metrics`` for Prometheus: no session, its own scrape token, 404 while it has none.

nginx lets only ``dashboard.metrics_allow`` reach it; the token is the second lock.  It is a
GET that changes nothing, so no CSRF token is involved; it never touches the session store.
"""

from __future__ import annotations

import logging

import bottle

from fmappliance.bearer import bearer_token_matches
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.metrics import dashboard_metrics_text
from fmappliance.prometheus_text import CONTENT_TYPE

log = logging.getLogger(__name__)


def scrape_refusal(ctx, token: str | None):
    """The answer to a scrape without the right ``dashboard.metrics_token`` (404 while none is set), or None.

    Shared by every page Prometheus scrapes (/metrics, the fleet's per-server metrics and service discovery)."""
    if not token:
        return ctx.fail(404, "There is no such page.")
    if not bearer_token_matches(bottle.request.environ.get("HTTP_AUTHORIZATION"), token):
        return bottle.HTTPResponse(
            "Missing or wrong scrape token: send 'Authorization: Bearer <token>' (dashboard.metrics_token_file).\n",
            status=401,
            headers={
                "Content-Type": "text/plain; charset=utf-8",
                "WWW-Authenticate": 'Bearer realm="fm-dashboard metrics"',
            },
        )
    return None


def register(app: bottle.Bottle, ctx) -> None:
    token = ctx.config["dashboard"].get("metrics_token")
    if not token:
        log.info("GET /metrics is off: dashboard.metrics_token_file is not set or the file does not exist")

    @app.get("/metrics")
    def metrics():
        refused = scrape_refusal(ctx, token)
        if refused is not None:
            return refused
        try:
            agent_text = ctx.agent.metrics_text()
        except AgentError as exc:
            log.warning("metrics scrape: the agent's series are missing: %s", exc.message)
            agent_text = None
        text = dashboard_metrics_text(agent_text)
        if getattr(ctx.services, "fleet_view", None) is not None:  # fleet.listen: per-server series
            from fmappliance.dashboard.pages_fleet import fleet_metrics_text

            text += fleet_metrics_text(ctx.services.fleet_view)
        return bottle.HTTPResponse(text, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
