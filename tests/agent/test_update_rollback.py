"""update_stack rolls itself back when it fails, through the real agent process and the doubles."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import pytest
from restore_support import TARGETS, bench_calls, bench_root, content, published_dump, run_job, set_content

DOUBLES = Path(__file__).resolve().parents[1] / "doubles"


def docker_double():
    loader = importlib.machinery.SourceFileLoader("docker_double", str(DOUBLES / "docker"))
    spec = importlib.util.spec_from_loader("docker_double", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture
def agent(world, agent_process):
    return agent_process()


def running_images(world) -> dict:
    docker = docker_double()
    data = world.doubles.project(world.compose_project)
    return {
        svc: entry.get("image") or docker.image_id(world.compose_project, svc, 1)
        for svc, entry in data["services"].items()
    }


def sites_of(agent, stack: str) -> list[str]:
    status, res = agent.request("GET", f"/stacks/{stack}")
    assert status == 200, res
    return res["stack"]["sites"]


def test_a_compose_update_whose_migrate_fails_runs_the_old_images_and_the_old_data_again(world, agent):
    stack, site = TARGETS["compose"]
    sites = sites_of(agent, stack)
    for s in sites:
        set_content(world, stack, s, f"before-update {s}")
    before = running_images(world)
    world.doubles.set_faults(fail={"bench migrate": {"rc": 1, "times": 1, "stderr": "migrate broke"}})

    job = run_job(agent, {"action": "update_stack", "stack": stack}, "failed", timeout=240)

    after = running_images(world)
    assert after == before, job["message"] + job["output"][-3000:]
    # the update really ran newer images before it was undone
    data = world.doubles.project(world.compose_project)
    assert all(entry.get("old_images") for entry in data["services"].values())
    message = job["message"]
    assert "migrate" in message and "Rolled back" in message and "previous images run again" in message
    pre_update = {}
    for s in sites:
        listing = agent.request("GET", f"/backups/{stack}/{s}")[1]["backups"]
        (pre,) = [b for b in listing if b["label"] == "pre-update"]
        pre_update[s] = pre["id"]
        assert content(world, stack, s) == published_dump(world, stack, s, pre["id"]), message
        assert f"{s} restored from {pre['id']}" in message
    assert bench_calls(world, ("--force", "restore"))
    # the override pinning the digests was used before the databases were restored
    calls = [c["argv"] for c in world.doubles.invocations("docker")]
    pin = next(i for i, a in enumerate(calls) if any(x.endswith("-pinned.json") for x in a))
    first_restore = next(i for i, a in enumerate(calls) if "restore" in a and "--force" in a)
    assert pin < first_restore


def test_an_fm_update_failure_restores_the_databases_and_names_the_commits(world, agent):
    stack, site = TARGETS["fm"]
    set_content(world, stack, site, "before-update")
    (bench_root(world, stack) / "apps" / "frappe").mkdir(parents=True, exist_ok=True)
    (bench_root(world, stack) / "apps" / "frappe" / ".commit").write_text("1a2b3c4d5e\n")
    world.doubles.set_faults(fail={"bench update": {"rc": 1, "times": 1, "stderr": "git pull failed"}})

    job = run_job(agent, {"action": "update_stack", "stack": stack}, "failed", timeout=240)

    message = job["message"]
    assert "Application code was not rolled back" in message and "frappe 1a2b3c4d5e" in message
    listing = agent.request("GET", f"/backups/{stack}/{site}")[1]["backups"]
    (pre,) = [b for b in listing if b["label"] == "pre-update"]
    assert f"{site} restored from {pre['id']}" in message
    assert content(world, stack, site) == published_dump(world, stack, site, pre["id"])


def test_a_good_update_records_and_checks_but_rolls_nothing_back(world, agent):
    stack, _site = TARGETS["compose"]
    before = running_images(world)
    job = run_job(agent, {"action": "update_stack", "stack": stack}, timeout=240)
    assert "recorded image digests" in job["output"] and "health check" in job["output"]
    assert running_images(world) != before
    assert not bench_calls(world, ("--force", "restore"))


def test_an_fm_update_reads_bench_versions_indented_json_and_goes_ahead_without_a_commit(world, agent):
    stack, _site = TARGETS["fm"]
    apps = bench_root(world, stack) / "apps"
    (apps / "frappe").mkdir(parents=True, exist_ok=True)
    (apps / "frappe" / ".commit").write_text("9f8e7d6\n")
    (apps / "erpnext").mkdir(parents=True, exist_ok=True)
    (apps / "erpnext" / ".commit").write_text("")  # a built image: erpnext is not a git checkout
    world.doubles.set_faults(bench_warnings=["WARN: [deprecated] bench_config setting ignored"])

    job = run_job(agent, {"action": "update_stack", "stack": stack}, timeout=240)

    assert (
        "recorded app commits: erpnext version 15.0.0 (no commit: not a git checkout), frappe 9f8e7d6" in job["output"]
    )
    assert "no commit to name for erpnext" in job["output"]
    assert "No commit to name for erpnext" in job["message"] and job["message"].startswith(f"Stack {stack} updated")
    assert bench_calls(world, ("update", "--no-backup"))
