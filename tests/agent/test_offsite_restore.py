"""Rebuild after losing the server: a fresh agent (empty state dir, no local backups) pointed at the same
offsite repository lists the site's offsite copies and restores one, through the real agent process."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from restore_support import backup, content, published_dir, restore, run_job, set_content
from support.polling import wait_for

STACK, SITE = "prod", "site1.example.com"
PASSWORD = "rebuild-pass-7Hq2mZ"
pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")


def offsite_jobs_done(agent):
    status, res = agent.request("GET", f"/jobs?stack={STACK}")
    assert status == 200
    copies = [j for j in res["jobs"] if j["action"] == "offsite_copy"]
    return copies if copies and all(j["status"] in ("succeeded", "failed") for j in copies) else None


def test_rebuild_after_loss_lists_and_restores_from_offsite(world, agent_process, tmp_path):
    pw = tmp_path / "offsite.password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    world.write_config(offsite={"repository": str(tmp_path / "offsite-repo"), "password_file": str(pw)})
    agent = agent_process()
    set_content(world, STACK, SITE, "monday")
    monday = backup(agent, STACK, SITE)
    copies = wait_for(lambda: offsite_jobs_done(agent), timeout=120, what="the offsite copy")
    assert [j["status"] for j in copies] == ["succeeded"], copies[0]["output"]
    agent.stop()

    # the server is lost: no published backups, an empty state dir
    shutil.rmtree(world.config["backups"]["base_path"])
    shutil.rmtree(world.config["agent"]["state_dir"])
    agent = agent_process()
    set_content(world, STACK, SITE, "tuesday")
    status, res = agent.request("GET", f"/offsite/{STACK}/{SITE}")
    assert status == 200, res
    assert [s["backup"] for s in res["snapshots"]] == [monday["id"]]
    assert {f["sha256"] for f in res["snapshots"][0]["files"]} == {f["sha256"] for f in monday["files"]}

    status, res = agent.request(
        "POST",
        "/action",
        {"action": "restore_site", "stack": STACK, "site": SITE, "backup": "2001-01-01_00-00-00", "source": "offsite"},
    )
    assert status == 404 and "no offsite copy" in res["message"]

    job = restore(agent, STACK, SITE, monday["id"], source="offsite")
    assert "every file of the offsite copy matches its manifest" in job["output"]
    assert "-- content tag: monday" in content(world, STACK, SITE)
    log = (world.root / "agent.log").read_text()
    assert PASSWORD not in log and PASSWORD not in job["output"]


def test_a_restore_test_proves_an_offsite_copy_with_nothing_local(world, agent_process, tmp_path):
    """test_restore with source offsite: the checked offsite staging feeds the throwaway site; the live site and
    GET /stacks keep every per-site field (backups, proofs, offsite)."""
    pw = tmp_path / "offsite.password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    world.write_config(offsite={"repository": str(tmp_path / "offsite-repo"), "password_file": str(pw)})
    agent = agent_process()
    set_content(world, STACK, SITE, "proof-offsite")
    made = backup(agent, STACK, SITE)
    copies = wait_for(lambda: offsite_jobs_done(agent), timeout=120, what="the offsite copy")
    assert [j["status"] for j in copies] == ["succeeded"], copies[0]["output"]
    # the local copy is gone: only the offsite one can be proven
    shutil.rmtree(published_dir(world, STACK, SITE))

    status, res = agent.request(
        "POST", "/action", {"action": "test_restore", "stack": STACK, "site": SITE, "source": "offsite"}
    )
    assert status == 400 and "backup" in res["message"]
    job = run_job(
        agent,
        {"action": "test_restore", "stack": STACK, "site": SITE, "source": "offsite", "backup": made["id"]},
        timeout=120,
    )
    assert "every file of the offsite copy matches its manifest" in job["output"]
    assert "-- content tag: proof-offsite" in content(world, STACK, SITE)  # the live site is untouched
    status, res = agent.request("GET", "/stacks")
    assert status == 200, res
    (entry,) = [s for s in res["stacks"] if s["name"] == STACK]
    proof = entry["last_restore_tests"][SITE]
    assert (proof["ok"], proof["source"], proof["backup"]) == (True, "offsite", made["id"])
    assert entry["last_offsite"][SITE]["backup"] == made["id"]
    assert SITE in entry["last_backups"] and SITE in entry["offsite_lag"]
    staging = Path(world.config["agent"]["state_dir"]) / "offsite-restore"
    assert not staging.exists() or list(staging.iterdir()) == []  # the staging dir went with the job
