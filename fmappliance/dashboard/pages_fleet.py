"""The fleet's pages (only with ``fleet.listen``; without a hub they answer 404, so a single-server
appliance is unchanged).

``GET /fleet``: one row per server, problems first.  ``Accept: application/json`` →
``{"servers": [{"name", "state", "last_seen", "agent_version", "clock_skew_seconds", "stacks_running",
"stacks_total", "worst_backup_age_seconds", "failed_jobs_24h", "schedules_version", "address", ...}]}``;
the page refreshes its table with htmx every 10 s.

For Prometheus, behind the scrape token of ``GET /metrics``: ``GET /metrics/server/<name>`` relays that
server's agent exposition through its link; ``GET /fleet/prometheus-sd`` is ``http_sd`` JSON (the same
as a ``file_sd`` file) with one target per server; :func:`fleet_metrics_text` gives the per-server
series that ``GET /metrics`` appends.
"""

from __future__ import annotations

import json

import bottle

from fmappliance.dashboard import negotiation
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.pages_metrics import scrape_refusal
from fmappliance.fleet.token import SERVER_NAME_RULE, is_valid_server_name
from fmappliance.prometheus_text import CONTENT_TYPE, Family, render
from fmappliance.wire import format_timestamp


def fleet_metrics_text(view) -> str:
    """``fmappliance_server_up``, ``…_last_seen_timestamp_seconds`` and ``…_clock_skew_seconds`` per server."""
    up = Family("fmappliance_server_up", "gauge", "1 when the server's link is up and its agent answers, else 0.")
    seen = Family(
        "fmappliance_server_last_seen_timestamp_seconds",
        "gauge",
        "When the dashboard last heard from the server through its link (Unix time).",
    )
    skew = Family(
        "fmappliance_server_clock_skew_seconds",
        "gauge",
        "The server's clock minus the dashboard's, from its last hello.",
    )
    for row in view.registry.servers():
        live = view.hub.state(row["name"])
        up.add(1 if live["state"] == "online" else 0, server=row["name"])
        if live["last_seen_timestamp"] is not None:
            seen.add(round(live["last_seen_timestamp"], 3), server=row["name"])
        if live["clock_skew_seconds"] is not None:
            skew.add(live["clock_skew_seconds"], server=row["name"])
    return render([up, seen, skew])


def prometheus_sd_groups(servers, target: str) -> list[dict]:
    """Prometheus service discovery (``http_sd`` / ``file_sd``): per server, the dashboard ``target``
    with that server's relayed exposition as the metrics path."""
    return [
        {"targets": [target], "labels": {"server": row["name"], "__metrics_path__": f"/metrics/server/{row['name']}"}}
        for row in servers
    ]


def register(app: bottle.Bottle, ctx) -> None:
    scrape_token = ctx.config["dashboard"].get("metrics_token")

    def view_or_404():
        view = getattr(ctx.services, "fleet_view", None)
        if view is None:
            raise ctx.fail(404, "This dashboard runs no fleet hub (fleet.listen is not set).")
        return view

    @app.get("/fleet")
    @ctx.login_required
    def fleet():
        data = view_or_404().overview()
        # Only the servers this user has a role on (dashboard.credentials.<user>: servers or roles).
        user = ctx.user()
        data = {**data, "servers": [row for row in data["servers"] if ctx.role_on(user, row["name"])]}
        bottle.response.set_header("Cache-Control", "no-store")
        if negotiation.wants_json(bottle.request):
            return ctx.json_response(data)
        if negotiation.is_htmx(bottle.request):
            return ctx.render("fleet_table", servers=data["servers"])
        return fleet_page(data["servers"])

    def fleet_page(servers, status: int = 200, joined: dict | None = None, notice=None):
        body = ctx.page(
            "fleet",
            "Fleet",
            active="fleet",
            servers=servers,
            manage=ctx.admin_everywhere(ctx.user()),
            joined=joined,
            notices=[notice] if notice else (),
        )
        return bottle.HTTPResponse(
            body, status=status, headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"}
        )

    def management_refusal():
        """Fleet management needs admin on every server (step-up is the table's, authorize.py)."""
        user = ctx.user()
        if ctx.admin_everywhere(user):
            return None
        ctx.audit.record(
            user=user, address=ctx.client_address(), action="refused", target=bottle.request.path, result="not admin"
        )
        return ctx.fail(403, "Managing the fleet needs the admin role on every server of it.")

    @app.post("/fleet/tokens")
    @ctx.protected_post
    def create_token():
        view = view_or_404()
        refused = management_refusal()
        if refused is not None:
            return refused
        name = (ctx._field("name") or "").strip() or None
        if name is not None and not is_valid_server_name(name):
            return ctx.fail(400, f"{name[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.")
        fleet = ctx.config["fleet"]
        from fmappliance.dashboard.hub import HubFiles  # the hub's code loads only where a fleet runs
        from fmappliance.fleet import certs

        try:
            hub_sha256 = certs.sha256_of_pem(HubFiles.of(fleet["dir"]).cert.read_bytes())
        except (OSError, certs.CertError):
            return ctx.fail(409, f"There is no hub certificate in {fleet['dir']}; run: fm-dashboard fleet init")
        made, expires = view.registry.create_token(hub_sha256, name, fleet["join_token_ttl"])
        address = fleet["address"] or fleet["listen"]
        command = f"sudo FM_JOIN_TOKEN='{made}' ./install.sh --agent-only --join {address} --name {name or 'NAME'}"
        # The token itself is never stored in the audit (only its id).
        ctx.audit.record(
            user=ctx.user(),
            address=ctx.client_address(),
            action="fleet_token_create",
            target=f"{made.token_id} for {name or 'any name'}",
            result="ok",
        )
        joined = {"token": str(made), "command": command, "expires": format_timestamp(expires), "name": name}
        if negotiation.wants_json(bottle.request):
            return ctx.json_response({"success": True, **joined})
        return fleet_page(view.overview()["servers"], joined=joined)

    @app.post("/fleet/servers/<name>/remove")
    @ctx.protected_post
    def remove_server(name):
        view = view_or_404()
        refused = management_refusal()
        if refused is not None:
            return refused
        if not is_valid_server_name(name) or name not in {row["name"] for row in view.registry.servers()}:
            return ctx.fail(404, "There is no such server in the fleet.")
        if (ctx._field("confirm") or "").strip() != name:
            return ctx.fail(400, f"Type the server's name ({name}) to confirm its removal.")
        view.registry.remove(name)
        # Its schedules go with it (listed in the answer and the audit); config.yaml's stay until edited.
        store = ctx.scheduler.store
        gone, kept = [], []
        for schedule in store.list():
            if schedule.get("server") != name:
                continue
            label = f"{schedule['stack']}/{schedule['site']} {schedule['frequency']} {schedule['time']}"
            if schedule["source"] == "ui" and store.remove(schedule["id"]):
                gone.append(label)
            else:
                kept.append(label)
        ctx.audit.record(
            user=ctx.user(),
            address=ctx.client_address(),
            action="fleet_remove",
            target=name,
            result="ok" + (f"; schedules removed: {', '.join(gone)}" if gone else ""),
        )
        message = (
            f"Server {name} removed: its certificate is refused from now on; if it is connected it is told to forget "
            f"its fleet token (on {name} itself, also run: fm-agent fleet leave)."
            + (f" Its schedules were removed: {'; '.join(gone)}." if gone else "")
            + (f" Remove these from config.yaml: {'; '.join(kept)}." if kept else "")
        )
        if negotiation.wants_json(bottle.request):
            return ctx.json_response({"success": True, "message": message, "schedules_removed": gone})
        return fleet_page(view.overview()["servers"], notice=("ok", message))

    @app.get("/metrics/server/<name>")
    def server_metrics(name):
        refused = scrape_refusal(ctx, scrape_token)
        if refused is not None:
            return refused
        view = view_or_404()
        if not is_valid_server_name(name):
            return ctx.fail(404, "There is no such server in the fleet.")
        try:
            text = view.client(name).metrics_text()
        except AgentError as exc:
            return bottle.HTTPResponse(
                exc.message + "\n",
                status=404 if exc.status == 404 else 503,
                headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"},
            )
        return bottle.HTTPResponse(text, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})

    @app.get("/fleet/prometheus-sd")
    def prometheus_sd():
        refused = scrape_refusal(ctx, scrape_token)
        if refused is not None:
            return refused
        view = view_or_404()
        target = bottle.request.get_header("Host") or "localhost"
        groups = prometheus_sd_groups(view.registry.servers(), target)
        return bottle.HTTPResponse(
            json.dumps(groups), headers={"Content-Type": "application/json", "Cache-Control": "no-store"}
        )
