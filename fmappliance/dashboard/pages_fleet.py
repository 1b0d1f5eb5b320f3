"""``GET /fleet``: one row per server of the fleet, problems first (only with ``fleet.listen``).

``Accept: application/json`` → ``{"servers": [{"name", "state", "last_seen", "agent_version",
"clock_skew_seconds", "stacks_running", "stacks_total", "worst_backup_age_seconds",
"failed_jobs_24h", "schedules_version", "address", ...}]}``; the page refreshes its table with
htmx every 10 s.  Without a hub the route answers 404, so a single-server appliance is unchanged.
"""

from __future__ import annotations

import bottle

from fmappliance.dashboard import negotiation


def register(app: bottle.Bottle, ctx) -> None:
    @app.get("/fleet")
    @ctx.login_required
    def fleet():
        view = getattr(ctx.services, "fleet_view", None)
        if view is None:
            return ctx.fail(404, "This dashboard runs no fleet hub (fleet.listen is not set).")
        data = view.overview()
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(data)
        if negotiation.is_htmx(bottle.request):
            return ctx.render("fleet_table", servers=data["servers"])
        return ctx.page("fleet", "Fleet", active="fleet", servers=data["servers"])
