"""Fleet management from the /fleet page: a join token, a removal (its schedules go too); admin on
every server and a fresh step-up, or refused with the reason."""

from __future__ import annotations

from pathlib import Path

from support.config_factory import TEST_PASSWORD_HASH
from support.wsgi import WSGIClient

from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.fleet_cli import _init
from fmappliance.dashboard.fleet_registry import FleetRegistry
from fmappliance.fleet.token import parse

JSON = {"Accept": "application/json"}


class _Hub:
    def state(self, name):
        return {
            "state": "online",
            "idle_connections": 2,
            "last_seen": None,
            "agent_version": "1.0",
            "clock_skew_seconds": 0.0,
            "clock_warning": None,
            "last_seen_timestamp": None,
        }


class _View:
    local_name = "hq"

    def __init__(self, registry):
        self.registry = registry
        self.hub = _Hub()

    def overview(self):
        keys = (
            "last_seen",
            "agent_version",
            "clock_skew_seconds",
            "clock_warning",
            "stacks_running",
            "stacks_total",
            "worst_backup_age_seconds",
            "failed_jobs_24h",
            "schedules_version",
            "figures_as_of",
            "problem",
        )
        return {
            "servers": [
                {**dict.fromkeys(keys), "name": r["name"], "state": "online", "address": r["address"]}
                for r in self.registry.servers()
            ]
        }


def _fleet_app(config, clock, tmp_path, credentials):
    config["fleet"].update(dir=str(tmp_path / "fleet"), local_name="hq", address="hub.example.com:9443")
    config["dashboard"]["credentials"] = {n: {"password": TEST_PASSWORD_HASH, **e} for n, e in credentials.items()}
    assert _init(Path(config["fleet"]["dir"])) == 0
    app = make_app(config, clock=clock)
    registry = FleetRegistry(app.ctx.services.db)
    token, _ = registry.create_token("0" * 64, "erp-b", 600)
    registry.redeem(
        token.token_id,
        token.secret,
        "erp-b",
        "192.0.2.7",
        "1.0",
        50,
        sign=lambda n: "CERT",
        cert_sha256=lambda pem: "ab" * 32,
    )
    app.ctx.services.fleet_view = _View(registry)
    return app, registry


def test_admins_of_every_server_make_join_tokens_and_remove_servers(config, clock, tmp_path):
    app, registry = _fleet_app(
        config,
        clock,
        tmp_path,
        {"admin": {"role": "admin"}, "ops": {"roles": {"*": "admin", "erp-b": "operator"}}},
    )
    admin, ops = WSGIClient(app), WSGIClient(app)
    assert admin.login("admin").status == 303 and ops.login("ops").status == 303
    page = admin.get("/fleet").text
    assert 'action="/fleet/tokens"' in page and 'action="/fleet/servers/erp-b/remove"' in page
    assert 'action="/fleet/tokens"' not in ops.get("/fleet").text
    token = admin.page_token("/fleet")

    made = admin.post("/fleet/tokens", data={"csrf_token": token, "name": "erp-c"}, headers=JSON)
    assert made.status == 200, made.text
    joined = made.json()
    assert parse(joined["token"]).token_id in [t["id"] for t in registry.tokens()]
    assert joined["command"].startswith("sudo FM_JOIN_TOKEN='FMJ1")
    assert joined["command"].endswith("--join hub.example.com:9443 --name erp-c")
    rows = admin.get("/audit", headers=JSON).json()["events"]
    assert rows[0]["action"] == "fleet_token_create" and joined["token"] not in str(rows)
    bad = admin.post("/fleet/tokens", data={"csrf_token": token, "name": "Bad Name"}, headers=JSON)
    assert bad.status == 400 and "is not a valid server name" in bad.json()["message"]

    refused = ops.post("/fleet/tokens", data={"csrf_token": ops.page_token("/fleet")}, headers=JSON)
    assert refused.status == 403
    assert refused.json()["message"] == "Managing the fleet needs the admin role on every server of it."

    # Step-up: a session whose last proof is older than 5 minutes is asked again.
    clock.advance(6 * 60)
    admin.get("/fleet")
    asked = admin.post("/fleet/tokens", data={"csrf_token": token}, headers=JSON)
    assert asked.status == 401 and asked.json()["step_up"] is True

    clock.advance(-6 * 60)
    app.ctx.scheduler.store.add(
        {"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00", "timezone": "UTC", "server": "erp-b"},
        "admin",
    )
    wrong = admin.post("/fleet/servers/erp-b/remove", data={"csrf_token": token, "confirm": "erp"}, headers=JSON)
    assert wrong.status == 400 and registry.servers()
    removed = admin.post("/fleet/servers/erp-b/remove", data={"csrf_token": token, "confirm": "erp-b"}, headers=JSON)
    assert removed.status == 200, removed.text
    assert removed.json()["schedules_removed"] == ["prod/* daily 02:00"]
    assert registry.servers() == [] and app.ctx.scheduler.store.list() == []
    assert (
        admin.post("/fleet/servers/erp-b/remove", data={"csrf_token": token, "confirm": "erp-b"}, headers=JSON).status
        == 404
    )
