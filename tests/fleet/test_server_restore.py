"""A restore on a fleet server, operated through ``/s/<server>/`` end to end (issue 24 §6).

Two server worlds whose stacks are both called ``prod``, each with a real agent and uplink, joined
to a real hub; the dashboard app in this process.  A backup of erp-b's site is taken through its
prefix, the site's database is changed, and the backup is restored through the dashboard's restore
page under the same prefix (typed confirmation, step-up).  The doubles' databases are text, so the
test reads which dump the site holds afterwards; erp-c's ``prod`` must not have been touched.
"""

from __future__ import annotations

import json
import re

import pytest
from support.config_factory import TEST_PASSWORD
from support.fleet_world import ServerWorld, joined_fleet
from support.polling import wait_for
from support.wsgi import FakeClock, WSGIClient

from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.fleet_client import FleetView

pytestmark = pytest.mark.slow
JSON = {"Accept": "application/json"}
SITE = "site1.example.com"


def database(world: ServerWorld) -> tuple:
    """(the db server of prod in this world, the site's database name)."""
    bench = world.world.doubles.volume_bench(world.world.compose_project)
    db_name = json.loads((bench / "sites" / SITE / "site_config.json").read_text())["db_name"]
    return world.world.doubles.db_server(world.world.compose_project), db_name


def set_content(world: ServerWorld, tag: str) -> None:
    from db_server import site_content  # on sys.path once support.world is imported

    server, db_name = database(world)
    server.set_content(db_name, site_content(SITE, notes=20, tag=tag))


def content(world: ServerWorld) -> str:
    server, db_name = database(world)
    return server.content(db_name) or ""


@pytest.fixture
def fleet(tmp_path):
    with joined_fleet(tmp_path, ("erp-b", "erp-c"), unreachable_after=2) as (hub, worlds):
        clock = FakeClock()
        app = make_app(hub.config, clock=clock)
        app.ctx.services.fleet_view = FleetView(hub.hub, hub.registry, hub.config)
        client = WSGIClient(app)
        assert client.login().status == 303
        yield hub, worlds, client, clock


def wait_job(client: WSGIClient, server: str, job_id: str, what: str) -> dict:
    return wait_for(
        lambda: (
            (j := client.get(f"/s/{server}/jobs/{job_id}", headers=JSON).json())["status"] in ("succeeded", "failed")
            and j
        ),
        90,
        what,
        interval=0.3,
    )


def test_a_backup_is_restored_through_the_server_prefix_and_the_other_prod_is_untouched(fleet):
    hub, (erp_b, erp_c), client, clock = fleet
    set_content(erp_b, "monday")
    set_content(erp_c, "erp-c's own")

    # Monday's backup of erp-b's site, taken through its prefix.
    token = client.page_token("/s/erp-b/dashboard")
    started = client.post(f"/s/erp-b/site/prod/{SITE}/backup", data={"csrf_token": token}, headers=JSON)
    assert started.status == 202, started.text
    job = wait_job(client, "erp-b", started.json()["job"]["id"], "the backup on erp-b to end")
    assert job["status"] == "succeeded", job
    backups = client.get(f"/s/erp-b/backups/prod/{SITE}", headers=JSON).json()["backups"]
    monday = backups[0]["id"]
    assert f'href="/s/erp-b/restore/prod/{SITE}/{monday}"' in client.get(f"/s/erp-b/backups/prod/{SITE}").text

    # Tuesday: the site's database changes.
    set_content(erp_b, "tuesday")
    url = f"/s/erp-b/restore/prod/{SITE}/{monday}"
    page = client.get(url)
    assert page.status == 200, page.text
    assert f"{SITE} on prod (this site)" in page.text

    # A wrong typed confirmation starts nothing.
    token = page.csrf_token()
    fields = {"target_stack": "prod", "target_site": SITE}
    wrong = client.post(url, data={"csrf_token": token, **fields, "confirm": "site1"}, headers=JSON)
    assert wrong.status == 400 and "confirm" in wrong.json()["errors"]

    # Restoring over an existing site asks a session older than five minutes to confirm again: step-up
    # through the page under the prefix, back to the restore page, then the restore starts.
    clock.advance(6 * 60)
    asked = client.post(url, data={"csrf_token": token, **fields, "confirm": SITE, "return_to": url})
    assert asked.status == 303, asked.text
    verify = asked.header("Location")
    assert verify.startswith("/account/verify?"), verify
    assert 'name="password"' in client.get(verify).text
    confirmed = client.post("/account/verify", data={"csrf_token": token, "password": TEST_PASSWORD, "next": url})
    assert confirmed.status == 303 and confirmed.header("Location") == url
    assert "-- content tag: tuesday" in content(erp_b), "nothing ran before the step-up"

    answer = client.post(url, data={"csrf_token": token, **fields, "confirm": SITE}, headers=JSON)
    assert answer.status == 202, answer.text
    restore_job = answer.json()["job"]
    assert restore_job["action"] == "restore_site"
    job = wait_job(client, "erp-b", restore_job["id"], "the restore on erp-b to end")
    assert job["status"] == "succeeded", f"{job['message']}\n{job['output']}"

    # erp-b's site holds Monday's dump again (and a safety backup holds Tuesday's); erp-c's prod is as it was.
    assert "-- content tag: monday" in content(erp_b)
    assert "-- content tag: tuesday" not in content(erp_b)
    labels = {
        b["id"]: b.get("label") for b in client.get(f"/s/erp-b/backups/prod/{SITE}", headers=JSON).json()["backups"]
    }
    assert labels[job["result"]["safety_backup"]] == "pre-restore"
    assert "-- content tag: erp-c's own" in content(erp_c)
    assert not erp_c.world.published("prod", SITE)
    assert client.get(f"/s/erp-c/jobs/{restore_job['id']}", headers=JSON).status == 404
    erp_c_audit = erp_c.state_dir / "fleet-audit.jsonl"  # written on erp-c's first action through its link
    assert not erp_c_audit.exists() or "restore_site" not in erp_c_audit.read_text()

    # The dashboard's audit row names the server and the request id erp-b's own fleet audit recorded.
    row = next(r for r in client.app.ctx.audit.recent() if r["action"] == "restore_site" and r["result"] == "started")
    assert row["server"] == "erp-b" and row["target"].startswith(f"prod/{SITE} from prod/{SITE} backup {monday}")
    assert re.fullmatch(r"[0-9a-f]{16}", row["request_id"]), row
    on_server = [json.loads(line) for line in (erp_b.state_dir / "fleet-audit.jsonl").read_text().splitlines()]
    restores = [e for e in on_server if e.get("action") == "restore_site"]
    assert [(e["request_id"], e["result"], e["server"]) for e in restores] == [(row["request_id"], 202, "erp-b")]
