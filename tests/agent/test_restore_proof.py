"""test_restore against the doubles, through the real agent process, for both stack types.

A good backup is proven in a throwaway site that is gone afterwards; a damaged one (right hash,
a dump the database refuses) fails the proof with the reason and also leaves nothing behind; the
live site is never touched.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from db_server import BAD_SQL
from restore_support import TARGETS, backup, bench_root, content, run_job, server, set_content, site_config

KINDS = sorted(TARGETS)


@pytest.fixture
def agent(world, agent_process):
    return agent_process()


def throwaway_of(job: dict) -> str:
    names = {w for w in job["output"].split() if w.startswith("restore-check-")}
    assert len(names) >= 1, job["output"]
    return sorted(names)[0].rstrip(";:,.")


def assert_nothing_left(world, stack: str, throwaway: str) -> None:
    from fmappliance.agent.restore import frappe_db_name

    root = bench_root(world, stack)
    assert not (root / "sites" / throwaway).exists()
    # No file of the throwaway site anywhere: bench's archives (archived/sites, archived_sites), the agent's
    # own archive dir for drop-site, its staging, its state dir.
    state_dir = Path(world.config["agent"]["state_dir"])
    for top in (root, world.bench_path, state_dir, Path(world.config["backups"]["base_path"])):
        left = [p for p in top.rglob("*") if throwaway in p.name or p.name.startswith(".fmappliance-dropped-")]
        assert not left, left
    db = server(world, stack)
    assert db.content(frappe_db_name(throwaway)) is None
    assert not [u for u in db.users() if u.startswith("fma_restore_")]


def live_state(world, stack: str, site: str) -> tuple:
    config = site_config(world, stack, site)
    return content(world, stack, site), config.get("maintenance_mode"), config.get("pause_scheduler")


def last_proof(agent, stack: str, site: str):
    status, res = agent.request("GET", "/stacks")
    assert status == 200, res
    (entry,) = [s for s in res["stacks"] if s["name"] == stack]
    return entry["last_restore_tests"][site]


@pytest.mark.parametrize("kind", KINDS)
def test_a_good_backup_is_proven_and_leaves_nothing_behind(world, agent, kind):
    stack, site = TARGETS[kind]
    set_content(world, stack, site, "proof")
    made = backup(agent, stack, site)
    assert last_proof(agent, stack, site) is None
    before = live_state(world, stack, site)

    job = run_job(agent, {"action": "test_restore", "stack": stack, "site": site})

    throwaway = throwaway_of(job)
    assert throwaway.endswith(".localhost") and throwaway != site
    assert_nothing_left(world, stack, throwaway)
    assert live_state(world, stack, site) == before
    out = job["output"]
    # muted and paused before the restore ran
    assert out.index("mute_emails") < out.index("--force restore")
    assert out.index("pause_scheduler") < out.index("--force restore")
    assert "tabUser holds 2 rows" in out
    assert "--archived-sites-path" in out and "removed the throwaway site's files: " in out
    assert f"the throwaway site {throwaway} was dropped and its files removed (" in job["message"]
    proof = last_proof(agent, stack, site)
    assert proof["ok"] is True and proof["backup"] == made["id"] and proof["source"] == "local"
    assert proof["time"] and "proven restorable" in proof["message"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_dump_the_database_refuses_fails_the_proof_and_leaves_nothing_behind(world, agent, kind):
    stack, site = TARGETS[kind]
    set_content(world, stack, site, "damaged", extra=BAD_SQL + "\n")
    made = backup(agent, stack, site)  # the hash is right: the dump is damaged inside
    before = live_state(world, stack, site)

    job = run_job(agent, {"action": "test_restore", "stack": stack, "site": site, "backup": made["id"]}, "failed")

    assert "ERROR 1064" in job["message"] and made["id"] in job["message"]
    throwaway = throwaway_of(job)
    assert f"The throwaway site {throwaway} was dropped and its files removed (" in job["message"]
    assert_nothing_left(world, stack, throwaway)
    assert live_state(world, stack, site) == before
    proof = last_proof(agent, stack, site)
    assert proof["ok"] is False and "ERROR 1064" in proof["message"] and proof["backup"] == made["id"]


def test_results_survive_an_agent_restart(world, agent_process):
    stack, site = TARGETS["compose"]
    agent = agent_process()
    backup(agent, stack, site)
    run_job(agent, {"action": "test_restore", "stack": stack, "site": site})
    agent.stop()
    again = agent_process()
    assert last_proof(again, stack, site)["ok"] is True
    series = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics_text(again).splitlines()
        if line.startswith("fmappliance_restore_test_last_success_timestamp_seconds{")
    }
    proven = [v for k, v in series.items() if f'site="{site}"' in k and f'stack="{stack}"' in k]
    assert proven and proven[0] > 1.7e9
    assert [v for k, v in series.items() if f'site="{site}"' not in k] and all(
        v == 0 for k, v in series.items() if f'site="{site}"' not in k
    )


def metrics_text(agent) -> str:
    import urllib.request

    from support.world import TEST_TOKEN

    req = urllib.request.Request(agent.url + "/metrics", headers={"Authorization": f"Bearer {TEST_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as res:
        return res.read().decode()


def test_bad_requests_are_refused_with_a_sentence(world, agent):
    stack, site = TARGETS["compose"]
    status, res = agent.request("POST", "/action", {"action": "test_restore", "stack": stack, "site": site})
    assert status == 404 and "no verified backup" in res["message"]
    backup(agent, stack, site)
    for body, code, words in (
        ({"source": "offsite"}, 409, "Offsite copies are not configured"),
        ({"source": "cloud"}, 400, "source must be"),
        ({"backup": "yesterday"}, 400, "backup must be"),
        ({"backup": "2020-01-01_00-00-00"}, 404, "no backup 2020-01-01_00-00-00"),
    ):
        status, res = agent.request("POST", "/action", {"action": "test_restore", "stack": stack, "site": site, **body})
        assert status == code and words in res["message"], (body, res)
    assert json.dumps(last_proof(agent, stack, site)) == "null"


def test_a_failed_proof_and_a_failed_update_are_notified_once(world, agent, tmp_path):
    """The dashboard's watcher, over the real agent: restore_test_failed and update_failed go out once each."""
    from support.webhook_receiver import WebhookReceiver
    from support.world import TEST_TOKEN

    from fmappliance.dashboard.agent_client import AgentClient
    from fmappliance.dashboard.job_watch import build_failed_job_watcher
    from fmappliance.dashboard.notifications import Notifier
    from fmappliance.dashboard.state_db import StateDB

    hook = WebhookReceiver()
    notifier = Notifier({"webhook_url": hook.url, "events": ["restore_test_failed", "update_failed"]})
    try:
        client = AgentClient(agent.url, TEST_TOKEN, 10)
        watcher = build_failed_job_watcher(world.config, client, StateDB(str(tmp_path)), notifier=notifier)
        assert watcher.poll() == 0  # the baseline
        stack, site = TARGETS["fm"]
        set_content(world, stack, site, "damaged", extra=BAD_SQL + "\n")
        backup(agent, stack, site)
        proof = run_job(agent, {"action": "test_restore", "stack": stack, "site": site}, "failed")
        world.doubles.set_faults(fail={"bench update": {"rc": 1, "times": 1}})
        update = run_job(agent, {"action": "update_stack", "stack": stack}, "failed", timeout=240)
        assert watcher.poll() == 2
        assert watcher.poll() == 0
        assert notifier.flush(10)
        got = {p["event"]: p["details"]["job_id"] for p in hook.received}
        assert got == {"restore_test_failed": proof["id"], "update_failed": update["id"]}
    finally:
        notifier.close()
        hook.close()


def test_a_throwaway_site_that_cannot_be_created_fails_the_proof_and_drops_the_temporary_user(world, agent):
    stack, site = TARGETS["compose"]
    made = backup(agent, stack, site)
    world.doubles.set_faults(fail={"bench new-site": {"rc": 1, "stderr": "new-site broke"}})
    job = run_job(agent, {"action": "test_restore", "stack": stack, "site": site}, "failed")
    assert "new-site" in job["message"] and made["id"] in job["message"]
    assert_nothing_left(world, stack, throwaway_of(job))
    assert last_proof(agent, stack, site)["ok"] is False
