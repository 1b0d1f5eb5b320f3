"""A bench that needs `fm migrate`: real fm 0.20.0 prints "Bench migration required" and exits 0 having done
nothing.  Through the real agent process: its jobs fail with one sentence, backups and updates refuse before
doing anything, and GET /stacks says so while keeping the containers' status.

The fm double prints what fm 0.20.0 prints (its --version, the migration notice; see docs/doubles.md).
"""

from __future__ import annotations

import pytest
from restore_support import run_job
from support.world import FM_SITE

SENTENCE = (
    'erp.localhost needs "fm migrate erp.localhost" (its files were written by Frappe Manager v0.19.0, '
    "this is v0.20.0); run it on the server, then retry."
)


def written_by(world, version: str | None) -> None:
    """The world's bench_config.toml (as FM 0.20.0 writes it) migrated to ``version``; None: an older file
    without the `[migration_state]` table, which the real fm reads as 0.0.0."""
    if version is not None:
        world.make_bench_need_migration(migrated_to=version)
        return
    path = world.bench_path / "bench_config.toml"
    kept, skipping = [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("["):
            skipping = line.strip() == "[migration_state]"
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept) + "\n")


def bench_argvs(world) -> list[list[str]]:
    return [a for a in world.doubles.argvs("docker") if "bench" in a]


@pytest.mark.parametrize("action, site", [("restart_stack", None), ("start_stack", None), ("restart_site", FM_SITE)])
def test_fm_saying_migration_required_fails_the_job_with_the_sentence_though_it_exits_0(
    world, agent_process, action, site
):
    written_by(world, "0.19.0")
    agent = agent_process()
    body = {"action": action, "stack": "erp", **({"site": site} if site else {})}
    job = run_job(agent, body, "failed")
    assert job["message"] == SENTENCE
    assert job["exit_code"] == 0  # fm itself said nothing went wrong
    assert "Bench migration required: erp.localhost (v0.19.0 → v0.20.0)" in job["output"]


@pytest.mark.parametrize("action", ["backup_site", "update_stack"])
def test_backups_and_updates_of_such_a_bench_fail_with_the_sentence_before_doing_anything(world, agent_process, action):
    written_by(world, "0.19.0")
    agent = agent_process()
    world.doubles.clear_invocations()
    body = {"action": action, "stack": "erp", **({"site": FM_SITE} if action == "backup_site" else {})}
    job = run_job(agent, body, "failed")
    assert job["message"] == SENTENCE
    assert bench_argvs(world) == []  # no bench command ran
    assert [a for a in world.doubles.argvs("fm") if a != ["--version"]] == []
    status, listing = agent.request("GET", f"/backups/erp/{FM_SITE}")
    assert status == 200 and listing["backups"] == []


def test_status_keeps_the_containers_status_and_says_the_bench_needs_migration(world, agent_process):
    written_by(world, "0.19.0")
    agent = agent_process()
    status, body = agent.request("GET", "/stacks")
    assert status == 200
    erp, prod = body["stacks"]
    assert erp["name"] == "erp" and erp["status"] == "running" and len(erp["services"]) > 0
    assert erp["needs_migration"] is True and erp["reason"] == SENTENCE
    assert prod["needs_migration"] is False and prod["reason"] is None
    # fm --version is asked once and remembered: another check and a refused backup do not ask again
    run_job(agent, {"action": "backup_site", "stack": "erp", "site": FM_SITE}, "failed")
    assert agent.request("GET", "/stacks/erp")[1]["stack"]["needs_migration"] is True
    assert world.doubles.argvs("fm").count(["--version"]) == 1


@pytest.mark.parametrize("version, needs", [("0.20.0", False), (None, True)])
def test_a_migrated_bench_is_fine_and_one_without_migration_state_needs_it_as_fm_says(
    world, agent_process, version, needs
):
    written_by(world, version)
    agent = agent_process()
    erp = agent.request("GET", "/stacks/erp")[1]["stack"]
    assert erp["needs_migration"] is needs
    if needs:
        assert erp["reason"] == SENTENCE.replace("v0.19.0", "v0.0.0")
    else:
        assert erp["reason"] is None
        run_job(agent, {"action": "restart_stack", "stack": "erp"})


def test_the_notice_is_read_also_when_rich_wraps_it_and_without_it_nothing_is_refused():
    from fmappliance.agent.stacks import fm_migration

    wrapped = " Bench migration required: a-very-long-bench-name.example.com (v0.18.1\n→ v0.20.0)\n Run: fm migrate x\n"
    assert fm_migration.notice_in(wrapped) == ("0.18.1", "0.20.0")
    assert fm_migration.notice_in("Bench migration required, somehow cut") == (None, None)
    assert fm_migration.notice_in("⚡ Restarted bench erp.localhost") is None
