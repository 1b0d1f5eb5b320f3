"""The audit log page: stored in UTC, shown in the server's time zone."""

from __future__ import annotations

import datetime as dt

import bottle

from fmappliance.dashboard import negotiation, views

PAGE_SIZE = 200


def register(app: bottle.Bottle, ctx) -> None:
    @app.get("/audit")
    @ctx.login_required
    def audit_page():
        rows = ctx.audit.recent(PAGE_SIZE)
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response({"events": rows})
        for row in rows:
            row["local_time"] = views.local_time(row["time"])
        zone = dt.datetime.now().astimezone().tzname() or "local"
        return ctx.page("audit", "Audit log", rows=rows, zone=zone, active="audit")
