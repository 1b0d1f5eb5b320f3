"""Every action on both stack types, checked against the argv the doubles recorded."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest
from support.agent_contract import JOB_KEYS
from support.polling import wait_for
from support.world import COMPOSE_SITES, FM_SITE
from support.wsgi import wait_job

LIST_SITES = ["find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json"]


def compose_base(world):
    return ["compose", "--project-directory", str(world.compose_path)]


def action_argvs(world, prog=None):
    """Recorded argvs without the site listing (which name checks may run)."""
    return [a for a in world.doubles.argvs(prog) if a[-len(LIST_SITES) :] != LIST_SITES]


def run_action(client, action, stack, site=None, expect="succeeded"):
    res = client.post_action(action, stack, site)
    assert res.status == 202, res
    body = res.json()
    assert body["success"] is True and body["duplicate"] is False
    job = wait_job(client, body["job"]["id"])
    assert job["status"] == expect, job
    return job


def assert_clean_invocations(world):
    for call in world.doubles.invocations():
        assert call["stdin_devnull"], call
        if call["prog"] == "fm":
            assert call["env"]["FRAPPE_MANAGER_HOME"] == str(world.fm_home)


# ------------------------------------------------------------------ compose stack


@pytest.mark.parametrize(
    "action, tail",
    [
        ("restart_stack", ["restart"]),
        ("start_stack", ["up", "-d"]),
        ("stop_stack", ["stop"]),
    ],
)
def test_compose_stack_actions_run_the_documented_compose_command(client, world, action, tail):
    run_action(client, action, "prod")
    assert action_argvs(world) == [compose_base(world) + tail]
    assert_clean_invocations(world)


def test_compose_stop_then_start_changes_the_status(client, world):
    run_action(client, "stop_stack", "prod")
    assert client.get("/stacks/prod").json()["stack"]["status"] == "stopped"
    run_action(client, "start_stack", "prod")
    assert client.get("/stacks/prod").json()["stack"]["status"] == "running"


def test_compose_restart_site_restarts_the_services_that_serve_the_bench(client, world):
    run_action(client, "restart_site", "prod", "site1.example.com")
    base = compose_base(world)
    assert action_argvs(world) == [
        base + ["ps", "--all", "--format", "json"],
        base + ["restart", "backend", "websocket", "queue-short", "queue-long", "scheduler"],
    ]


def test_compose_migrate_site_runs_bench_migrate_in_the_backend(client, world):
    job = run_action(client, "migrate_site", "prod", "site2.example.com")
    assert action_argvs(world) == [
        compose_base(world) + ["exec", "-T", "backend", "bench", "--site", "site2.example.com", "migrate"]
    ]
    assert "Migrating site2.example.com" in job["output"]
    assert job["exit_code"] == 0


def test_compose_backup_copies_out_and_publishes_a_verified_backup(client, world):
    job = run_action(client, "backup_site", "prod", "site1.example.com")
    base = compose_base(world)
    calls = action_argvs(world)
    assert calls[0] == base + [
        "exec",
        "-T",
        "backend",
        "bench",
        "--site",
        "site1.example.com",
        "backup",
        "--with-files",
    ]
    # Before copying: one stat in the container of every directory on the way and of every file.
    sites = "/home/frappe/frappe-bench/sites"
    backups_dir = f"{sites}/site1.example.com/private/backups"
    stat_call = calls[1]
    assert stat_call[: len(base) + 7] == base + ["exec", "-T", "backend", "stat", "-c", "%F|%s|%n", "--"]
    assert stat_call[len(base) + 7 : len(base) + 11] == [
        sites,
        f"{sites}/site1.example.com",
        f"{sites}/site1.example.com/private",
        backups_dir,
    ]
    assert len(stat_call) == len(base) + 15 and all(p.startswith(backups_dir + "/") for p in stat_call[-4:])
    copies, list_apps = calls[2:6], calls[6:]
    assert len(copies) == 4
    # The site's apps go into the manifest, as bench lists them.
    assert list_apps == [
        base + ["exec", "-T", "backend", "bench", "--site", "site1.example.com", "list-apps", "--format", "json"]
    ]
    for argv in copies:
        assert argv[: len(base) + 1] == base + ["cp"]
        src, dst = argv[-2:]
        assert src.startswith("backend:/home/frappe/frappe-bench/sites/site1.example.com/private/backups/")
        assert dst.startswith(str(Path(world.config["agent"]["state_dir"]) / "staging") + "/")
    manifest = job["result"]["backup"]
    assert manifest["verified"] is True and manifest["stack"] == "prod" and manifest["site"] == "site1.example.com"
    assert (
        manifest["apps"] == ["frappe", "erpnext"] and manifest["label"] == "manual" and manifest["encrypted"] is False
    )
    assert {f["part"] for f in manifest["files"]} == {"database", "files", "private-files", "site_config"}
    published = world.published("prod", "site1.example.com")
    assert f"{manifest['id']}.json" in published and f"{manifest['id']}.sql.gz" in published
    dump = gzip.decompress(
        (
            Path(world.config["backups"]["base_path"]) / "prod" / "site1.example.com" / f"{manifest['id']}.sql.gz"
        ).read_bytes()
    )
    assert dump.startswith(b"-- begin frappe metadata") and b"-- Dump completed" in dump
    # The staging copies are gone.
    assert list((Path(world.config["agent"]["state_dir"]) / "staging").iterdir()) == []
    # The listing and status show it.
    assert client.get("/backups/prod/site1.example.com").json()["backups"][0]["id"] == manifest["id"]
    last = client.get("/stacks/prod").json()["stack"]["last_backups"]
    assert last["site1.example.com"]["id"] == manifest["id"] and last["site2.example.com"] is None
    assert_clean_invocations(world)


def test_compose_update_backs_up_every_site_then_pulls_ups_and_migrates(client, world):
    job = run_action(client, "update_stack", "prod")
    base = compose_base(world)
    calls = action_argvs(world)
    backups = [c for c in calls if "backup" in c]
    assert [c[c.index("--site") + 1] for c in backups] == list(COMPOSE_SITES)
    # What runs now is recorded first (service -> image -> repo digest), so a failed update can be undone.
    assert calls[0] == base + ["ps", "--all", "--format", "json"] and calls[1] == base + ["images", "--format", "json"]
    inspects = calls[2 : calls.index(backups[0])]
    assert inspects and all(c[:2] == ["image", "inspect"] for c in inspects)
    tail = [
        c
        for c in calls[calls.index(backups[0]) :]
        if "cp" not in c and "backup" not in c and "stat" not in c and "list-apps" not in c
    ]
    assert tail == [
        base + ["pull"],
        base + ["up", "-d"],
        base + ["exec", "-T", "backend", "bench", "--site", "site1.example.com", "migrate"],
        base + ["exec", "-T", "backend", "bench", "--site", "site2.example.com", "migrate"],
        base + ["ps", "--all", "--format", "json"],  # the health check
    ]
    # Every backup happened before the first change.
    assert max(calls.index(c) for c in backups) < calls.index(base + ["pull"])
    for site in COMPOSE_SITES:
        assert any(n.endswith(".sql.gz") for n in world.published("prod", site))
    assert set(job["result"]["backups"]) == set(COMPOSE_SITES)


@pytest.mark.parametrize("stack", ["prod", "erp"])
def test_update_stops_before_changing_anything_when_its_backup_fails(client, world, stack):
    world.doubles.set_faults(fail={"bench backup": 1})
    job = run_action(client, "update_stack", stack, expect="failed")
    assert "backup" in job["message"] and "stopped" in job["message"]
    calls = action_argvs(world)
    assert not any(w in argv for argv in calls for w in ("pull", "up", "migrate", "update", "restart")), calls
    assert world.published(stack, COMPOSE_SITES[0] if stack == "prod" else FM_SITE) == []


def test_update_stops_when_its_backup_fails_verification(client, world):
    world.doubles.set_faults(dump="truncated")
    job = run_action(client, "update_stack", "prod", expect="failed")
    assert "verification" in job["message"]
    assert not any("pull" in argv for argv in action_argvs(world))


# ------------------------------------------------------------------ fm bench


@pytest.mark.parametrize(
    "action, command",
    [
        ("restart_stack", "restart"),
        ("start_stack", "start"),
        ("stop_stack", "stop"),
    ],
)
def test_fm_stack_actions_call_fm_non_interactively_with_its_home(client, world, action, command):
    run_action(client, action, "erp")
    assert action_argvs(world, "fm") == [["-n", command, "erp.localhost"]]
    assert_clean_invocations(world)
    # what the real fm then did to the bench (test_real_fm.py pins each)
    sent = [
        a[3:]
        for a in world.doubles.argvs("docker")
        if a[:3] == ["compose", "-f", str(world.bench_path / "docker-compose.yml")]
    ]
    effect = {"restart": ["supervisorctl"], "start": ["up", "--detach"], "stop": ["stop", "--timeout"]}[command]
    assert any(all(w in a for w in effect) for a in sent), sent


def test_fm_restart_site_restarts_the_bench(client, world):
    run_action(client, "restart_site", "erp", FM_SITE)
    assert action_argvs(world, "fm") == [["-n", "restart", "erp.localhost"]]
    assert sum("supervisorctl" in a for a in world.doubles.argvs("docker")) == 5  # web, schedule, 2 workers


def fm_bench(world, *args):
    """The argv (after `docker`) of a bench command on the fm bench: compose exec as FM runs it."""
    return [
        "compose",
        "-f",
        str(world.bench_path / "docker-compose.yml"),
        "exec",
        "-T",
        "--user",
        "frappe",
        "--workdir",
        "/workspace/frappe-bench",
        "frappe",
        "bench",
        *args,
    ]


def test_fm_migrate_site_runs_bench_in_the_frappe_container_without_fm_shell(client, world):
    job = run_action(client, "migrate_site", "erp", FM_SITE)
    assert action_argvs(world) == [fm_bench(world, "--site", "erp.localhost", "migrate")]
    assert not world.doubles.argvs("fm")
    assert "Migrating erp.localhost" in job["output"]
    assert_clean_invocations(world)


def test_fm_backup_publishes_from_the_bench_workspace(client, world):
    job = run_action(client, "backup_site", "erp", FM_SITE)
    assert action_argvs(world, "docker") == [
        fm_bench(world, "--site", "erp.localhost", "backup", "--with-files"),
        fm_bench(world, "--site", "erp.localhost", "list-apps", "--format", "json"),
    ]
    manifest = job["result"]["backup"]
    assert manifest["verified"] and len(manifest["files"]) == 4 and manifest["apps"] == ["frappe", "erpnext"]
    assert f"{manifest['id']}.json" in world.published("erp", FM_SITE)
    assert_clean_invocations(world)


def test_fm_update_backs_up_then_updates_without_bench_backup_then_restarts(client, world):
    run_action(client, "update_stack", "erp")
    calls = [
        [c["prog"], *c["argv"]] for c in world.doubles.invocations() if c["argv"][-len(LIST_SITES) :] != LIST_SITES
    ]
    calls = [c for c in calls if c[-1] != "--version"]  # fm's version, asked once for the migration check
    # The agent's own steps: its bench commands and its fm calls (the real fm's own docker calls for the restart
    # are pinned in test_real_fm.py).
    calls = [c for c in calls if c[0] == "fm" or "bench" in c]
    assert calls == [
        ["docker", *fm_bench(world, "version", "--format", "json")],  # the commits, recorded first
        ["docker", *fm_bench(world, "--site", "erp.localhost", "backup", "--with-files")],
        ["docker", *fm_bench(world, "--site", "erp.localhost", "list-apps", "--format", "json")],
        ["docker", *fm_bench(world, "update", "--no-backup")],
        ["fm", "-n", "restart", "erp.localhost"],
        ["docker", *fm_bench(world, "--site", "erp.localhost", "list-apps")],  # the health check
    ]
    assert_clean_invocations(world)


def test_fm_bench_failure_passes_the_exit_code_into_the_job(client, world):
    world.doubles.set_service(world.fm_project, "frappe", "exited", 0)
    job = run_action(client, "migrate_site", "erp", FM_SITE, expect="failed")
    assert job["exit_code"] == 1
    assert 'service "frappe" is not running' in job["output"]


def test_fm_failure_fails_the_job_with_fm_own_words(client, world):
    world.doubles.set_faults(daemon_down=True)
    job = run_action(client, "restart_stack", "erp", expect="failed")
    assert job["exit_code"] == 1
    assert "Docker daemon not running. Please start docker service" in job["output"]


def test_fm_missing_bench_dir_fails_the_job_before_fm_runs(client, world):
    # (the real fm finds a bench by its dir; with only docker-compose.yml gone it "restarts" nothing and exits 0)
    world.bench_path.rename(world.bench_path.with_name("moved-away"))
    job = run_action(client, "restart_stack", "erp", expect="failed")
    assert f"the working directory {world.bench_path} does not exist" in job["output"]
    assert world.doubles.argvs("fm") == []


# ------------------------------------------------------------------ backup failures


@pytest.mark.parametrize("stack, site", [("prod", "site1.example.com"), ("erp", FM_SITE)])
@pytest.mark.parametrize(
    "fault, words",
    [
        ({"dump": "truncated"}, "verification"),
        ({"dump": "no_trailer"}, "Dump completed"),
        ({"fail": {"bench backup": 1}}, "exit code 1"),
    ],
)
def test_a_bad_backup_fails_the_job_and_publishes_nothing(client, world, stack, site, fault, words):
    world.doubles.set_faults(**fault)
    job = run_action(client, "backup_site", stack, site, expect="failed")
    assert words in job["message"] or words in job["output"], job
    assert [n for n in world.published(stack, site) if not n.startswith(".")] == []
    assert list((Path(world.config["agent"]["state_dir"]) / "staging").glob("*")) == []


@pytest.mark.parametrize("stack, site", [("prod", "site1.example.com"), ("erp", FM_SITE)])
def test_backup_without_a_summary_falls_back_to_the_newest_files(client, world, stack, site):
    world.doubles.set_faults(no_summary=True)
    job = run_action(client, "backup_site", stack, site)
    assert len(job["result"]["backup"]["files"]) == 4
    assert "no backup summary" in job["output"]


def test_failed_copy_out_of_the_container_fails_the_backup(client, world):
    world.doubles.set_faults(fail={"compose cp": {"rc": 1, "stderr": "Error response from daemon: no space left"}})
    job = run_action(client, "backup_site", "prod", "site1.example.com", expect="failed")
    assert "no space left" in job["output"]
    assert [n for n in world.published("prod", "site1.example.com") if not n.startswith(".")] == []


def test_missing_docker_binary_fails_the_job_clearly(world, make_client):
    world.write_config(agent={"docker_binary": str(world.root / "no" / "docker")})
    client = make_client()
    job = run_action(client, "restart_stack", "prod", expect="failed")
    assert "was not found" in job["message"] and "docker_binary" in job["message"]


# ------------------------------------------------------------------ timeouts, queueing, duplicates


def test_timeout_kills_the_command_and_fails_the_job(world, make_client):
    world.write_config(agent={"action_timeouts": {"migrate_site": 1}})
    world.doubles.set_faults(hang={"bench migrate": 60})
    client = make_client()
    started = time.monotonic()
    job = run_action(client, "migrate_site", "prod", "site1.example.com", expect="failed")
    assert time.monotonic() - started < 15
    assert "timed out" in job["message"]
    # The whole process group is gone: no double is left sleeping.
    for pid in world.doubles.hanging_pids():
        assert not Path(f"/proc/{pid}").exists() or b"zombie" in Path(f"/proc/{pid}/status").read_bytes().lower()


def test_identical_action_while_queued_or_running_returns_the_same_job(client, world):
    world.doubles.set_faults(hang={"bench backup": 1.5})
    first = client.post_action("backup_site", "prod", "site1.example.com").json()
    second = client.post_action("backup_site", "prod", "site1.example.com")
    assert second.status == 202
    body = second.json()
    assert body["duplicate"] is True and body["job"]["id"] == first["job"]["id"]
    assert "already" in body["message"]
    wait_job(client, first["job"]["id"])
    assert sum("backup" in a for a in action_argvs(world)) == 1
    # Once finished, the same request starts a new job.
    world.doubles.set_faults()
    third = client.post_action("backup_site", "prod", "site1.example.com").json()
    assert third["duplicate"] is False and third["job"]["id"] != first["job"]["id"]
    wait_job(client, third["job"]["id"])


def test_actions_on_one_stack_run_one_after_another(client, world):
    # The backup hangs until released, whatever the real fm takes to restart the other stack.
    world.doubles.set_faults(hang={"bench backup": 120})
    backup = client.post_action("backup_site", "prod", "site1.example.com").json()["job"]
    migrate = client.post_action("migrate_site", "prod", "site1.example.com").json()["job"]
    other_stack = client.post_action("restart_stack", "erp").json()["job"]
    assert migrate["status"] == "queued"
    # Another stack does not wait for prod's queue.
    assert wait_job(client, other_stack["id"], timeout=60)["status"] == "succeeded"
    assert client.services.jobs.get(backup["id"])["status"] == "running"
    assert client.services.jobs.get(migrate["id"])["status"] == "queued"
    wait_for(world.doubles.hanging_pids, 60, "the backup to reach bench backup")
    world.doubles.release_hangs()
    for job in (backup, migrate):
        assert wait_job(client, job["id"])["status"] == "succeeded"
    calls = action_argvs(world, "docker")
    last_cp = max(i for i, a in enumerate(calls) if "cp" in a)
    first_migrate = min(i for i, a in enumerate(calls) if "migrate" in a)
    assert last_cp < first_migrate


def test_status_cache_is_invalidated_by_an_action(client, world):
    def ps_count():
        return sum(1 for a in world.doubles.argvs("docker") if "ps" in a)

    assert client.get("/stacks/prod").json()["stack"]["status"] == "running"
    n = ps_count()
    assert client.get("/stacks/prod").json()["stack"]["status"] == "running"
    assert ps_count() == n  # served from the cache
    run_action(client, "stop_stack", "prod")
    assert client.get("/stacks/prod").json()["stack"]["status"] == "stopped"  # not the cached "running"
    assert ps_count() == n + 1


def test_job_listing_is_newest_first_and_filtered_by_stack(client, world):
    a = run_action(client, "restart_stack", "prod")
    b = run_action(client, "restart_stack", "erp")
    c = run_action(client, "migrate_site", "prod", "site1.example.com")
    ids = [j["id"] for j in client.get("/jobs").json()["jobs"]]
    assert ids == [c["id"], b["id"], a["id"]]
    assert [j["id"] for j in client.get("/jobs?stack=prod&limit=1").json()["jobs"]] == [c["id"]]
    detail = client.get("/stacks/prod").json()
    assert [j["id"] for j in detail["jobs"]] == [c["id"], a["id"]]
    job = client.get(f"/jobs/{a['id']}").json()
    assert set(job) >= JOB_KEYS


def test_compose_update_refuses_to_start_when_the_sites_cannot_be_listed(client, world):
    world.doubles.set_service(world.compose_project, "backend", "exited", 0)
    job = run_action(client, "update_stack", "prod", expect="failed")
    assert "Update stopped before it began" in job["message"] and "not running" in job["message"]
    assert [a for a in action_argvs(world) if "pull" in a or "up" in a] == []


def test_three_backups_taken_by_hand_the_same_day_are_all_kept(client, world):
    """Default retention (daily 7, keep_last 3, safety hold): strict GFS kept only the day's newest."""
    ids = []
    for _ in range(3):
        ids.append(run_action(client, "backup_site", "prod", "site1.example.com")["result"]["backup"]["id"])
    listed = [b["id"] for b in client.get("/backups/prod/site1.example.com").json()["backups"]]
    assert listed == sorted(ids, reverse=True) and len(set(ids)) == 3


# ------------------------------------------------------------------ backup sources the container could redirect


def test_fm_backup_refuses_a_symlinked_backups_dir_and_publishes_nothing(client, world, tmp_path):
    """A bench whose private/backups links to another bench's: the other bench's dump is never published."""
    backups_dir = world.bench_path / "workspace" / "frappe-bench" / "sites" / FM_SITE / "private" / "backups"
    elsewhere = tmp_path / "other-bench-backups"
    elsewhere.mkdir()
    shutil.rmtree(backups_dir)
    backups_dir.symlink_to(elsewhere, target_is_directory=True)
    job = run_action(client, "backup_site", "erp", FM_SITE, expect="failed")
    assert f"{backups_dir} is a symbolic link or not a directory" in job["message"]
    assert "refusing to follow it" in job["message"]
    assert [n for n in world.published("erp", FM_SITE) if not n.startswith(".")] == []


def test_fm_backup_refuses_a_symlink_higher_up_in_the_workspace(client, world, tmp_path):
    site_dir = world.bench_path / "workspace" / "frappe-bench" / "sites" / FM_SITE
    moved = tmp_path / "moved-private"
    shutil.move(str(site_dir / "private"), moved)
    (site_dir / "private").symlink_to(moved, target_is_directory=True)
    job = run_action(client, "backup_site", "erp", FM_SITE, expect="failed")
    assert f"{site_dir / 'private'} is a symbolic link or not a directory" in job["message"]
    assert [n for n in world.published("erp", FM_SITE) if not n.startswith(".")] == []


def test_fm_backup_without_a_summary_lists_the_backups_dir_without_following_links(client, world, tmp_path):
    world.doubles.set_faults(no_summary=True)
    backups_dir = world.bench_path / "workspace" / "frappe-bench" / "sites" / FM_SITE / "private" / "backups"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(backups_dir)
    backups_dir.symlink_to(elsewhere, target_is_directory=True)
    job = run_action(client, "backup_site", "erp", FM_SITE, expect="failed")
    assert "Cannot read the backup dir" in job["message"] and "symbolic link" in job["message"]


def test_compose_backup_refuses_a_backups_dir_linked_to_another_site_and_copies_nothing(client, world):
    sites = world.doubles.volume_bench(world.compose_project) / "sites"
    own = sites / "site1.example.com" / "private" / "backups"
    shutil.rmtree(own, ignore_errors=True)
    (sites / "site2.example.com" / "private" / "backups").mkdir(parents=True, exist_ok=True)
    own.symlink_to("../../site2.example.com/private/backups", target_is_directory=True)
    job = run_action(client, "backup_site", "prod", "site1.example.com", expect="failed")
    assert (
        "In the container, /home/frappe/frappe-bench/sites/site1.example.com/private/backups is a symbolic link, "
        "not a directory" in job["message"]
    )
    assert not [c for c in action_argvs(world, "docker") if "cp" in c]
    assert [n for n in world.published("prod", "site1.example.com") if not n.startswith(".")] == []


def test_compose_backup_that_would_not_fit_is_refused_before_copying(client, world, monkeypatch):
    import shutil as real_shutil

    monkeypatch.setattr(
        real_shutil, "disk_usage", lambda path: real_shutil._ntuple_diskusage(10**9, 10**9 - 2000, 2000)
    )
    job = run_action(client, "backup_site", "prod", "site1.example.com", expect="failed")
    assert "not enough free space to copy the backup out of the container" in job["message"]
    assert not [c for c in action_argvs(world, "docker") if "cp" in c]
    assert list((Path(world.config["agent"]["state_dir"]) / "staging").glob("*")) == []


def test_compose_backup_file_that_changes_between_the_check_and_the_copy_is_refused(client, world):
    from support.polling import wait_for

    world.doubles.set_faults(hang={"compose cp": 3})
    res = client.post_action("backup_site", "prod", "site1.example.com")
    wait_for(world.doubles.hanging_pids, 20, "the copy out of the container to start")
    backups = world.doubles.volume_bench(world.compose_project) / "sites" / "site1.example.com" / "private" / "backups"
    dump = next(backups.glob("*-database.sql.gz"))
    with dump.open("ab") as handle:  # something in the container still writing after the size was taken
        handle.write(b"\0" * 4096)
    job = wait_job(client, res.json()["job"]["id"])
    assert job["status"] == "failed"
    assert f"{dump.name} changed while it was copied out of the container" in job["message"]
    assert [n for n in world.published("prod", "site1.example.com") if not n.startswith(".")] == []
