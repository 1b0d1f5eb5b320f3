"""The docker and fm doubles behave as docs/doubles.md documents the real CLIs."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tarfile

from double_state import DAEMON_DOWN, NO_COMPOSE_PLUGIN


def run(world, prog, *args, env=None):
    return subprocess.run(
        [str(world.bin / prog), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env or {"PATH": "/usr/bin:/bin"},
        timeout=30,
    )


def compose(world, *args):
    return run(world, "docker", "compose", "--project-directory", str(world.compose_path), *args)


def test_docker_version_has_a_server_key_unless_the_daemon_is_down(world):
    res = run(world, "docker", "version", "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout)["Server"]["Version"]
    world.doubles.set_faults(daemon_down=True)
    res = run(world, "docker", "version", "--format", "json")
    assert res.returncode == 1 and res.stderr.strip() == DAEMON_DOWN
    assert compose(world, "ps", "--all", "--format", "json").returncode == 1


def test_docker_without_the_compose_plugin_refuses_every_compose_command_as_docker_27_does(world):
    world.doubles.set_faults(no_compose_plugin=True)
    res = run(world, "docker", "compose", "ls", "--all")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.strip() == NO_COMPOSE_PLUGIN == "docker: 'compose' is not a docker command.\nSee 'docker --help'"
    res = run(world, "docker", "compose", "-p", "prod", "ps")
    assert (res.returncode, res.stderr) == (125, "unknown shorthand flag: 'p' in -p\nSee 'docker --help'.\n")
    res = run(world, "docker", "compose", "--project-directory", "/srv/x", "ps")
    assert (res.returncode, res.stderr.splitlines()[0]) == (125, "unknown flag: --project-directory")
    assert run(world, "docker", "version", "--format", "json").returncode == 0


def test_ps_shapes_and_all_flag(world):
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    lines = compose(world, "ps", "--all", "--format", "json").stdout.splitlines()
    assert len(lines) == 10 and all(json.loads(line)["Name"] for line in lines)
    running = compose(world, "ps", "--format", "json").stdout.splitlines()
    assert len(running) == 8  # configurator and queue-long are not running
    world.doubles.set_faults(ps_shape="array")
    out = compose(world, "ps", "--all", "--format", "json").stdout
    assert len(out.splitlines()) == 1 and len(json.loads(out)) == 10


def test_fm_style_up_and_stop_flags(world):
    """As FM sends them: the main file and the workers file of one project are stopped and started apart."""

    def states():
        return {svc: e["state"] for svc, e in world.doubles.project(world.fm_project)["services"].items()}

    main = ["-f", str(world.bench_path / "docker-compose.yml")]
    workers = ["-f", str(world.bench_path / "docker-compose.workers.yml")]
    assert run(world, "docker", "compose", *main, "stop", "--timeout", "10").returncode == 0
    assert {s for s, state in states().items() if state == "running"} == {"short-worker", "long-worker"}
    assert run(world, "docker", "compose", *workers, "stop", "--timeout", "10").returncode == 0
    assert set(states().values()) == {"exited"}
    assert run(world, "docker", "compose", *main, "up", "--detach", "--pull", "never").returncode == 0
    assert run(world, "docker", "compose", *workers, "up", "--detach", "--pull", "never").returncode == 0
    assert set(states().values()) == {"running"}


def test_bench_backup_writes_real_files_and_the_summary(world):
    res = compose(world, "exec", "-T", "backend", "bench", "--site", "site1.example.com", "backup", "--with-files")
    assert res.returncode == 0
    out = res.stdout.splitlines()
    assert out[0].startswith("Backup Summary for site1.example.com at ")
    assert out[-1] == "Backup for Site site1.example.com has been successfully completed with files"
    backups = world.doubles.volume_bench(world.compose_project) / "sites" / "site1.example.com" / "private" / "backups"
    dump = next(backups.glob("*-site1_example_com-database.sql.gz"))
    text = gzip.decompress(dump.read_bytes()).decode()
    assert text.startswith("-- begin frappe metadata") and text.rstrip().splitlines()[-1].startswith(
        "-- Dump completed"
    )
    with tarfile.open(next(backups.glob("*-site1_example_com-files.tar"))) as tar:
        assert all(n.startswith("./site1.example.com/public/files/") for n in tar.getnames())


def test_fm_double_prints_progress_on_stderr_and_refuses_unknown_benches(world):
    """The fm double (kept for faults the real fm cannot produce; the real fm: test_real_fm.py)."""
    env = {"PATH": "/usr/bin:/bin", "FRAPPE_MANAGER_HOME": str(world.fm_home)}
    fm = "../fm-double/fm"
    res = run(world, fm, "-n", "restart", "erp.localhost", env=env)
    assert res.returncode == 0 and res.stdout == ""
    assert "renamed" in res.stderr.splitlines()[0] and "⚡" in res.stderr
    res = run(world, fm, "-n", "restart", "nope.localhost", env=env)
    assert res.returncode == 1 and f"Bench not found at {world.fm_home}/sites/nope.localhost" in res.stderr
    res = run(world, fm, "-n", "shell", "erp.localhost", "-c", "bench --site erp.localhost migrate", env=env)
    assert res.returncode == 0 and "Migrating erp.localhost" in res.stdout


def test_faults_fail_and_hang_are_recorded_per_step(world):
    world.doubles.set_faults(fail={"compose restart": {"rc": 3, "stderr": "boom"}})
    res = compose(world, "restart")
    assert res.returncode == 3 and "boom" in res.stderr
    assert world.doubles.argvs("docker")[-1][-1] == "restart"


def test_stat_in_the_container_reports_symlinks_without_following_them(world):
    sites = world.doubles.volume_bench(world.compose_project) / "sites"
    (sites / "site1.example.com" / "private" / "backups").mkdir(parents=True, exist_ok=True)
    (sites / "site1.example.com" / "private" / "backups" / "a.sql.gz").write_bytes(b"12345")
    (sites / "site2.example.com" / "private").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(sites / "site2.example.com" / "private" / "backups", ignore_errors=True)
    (sites / "site2.example.com" / "private" / "backups").symlink_to("../../site1.example.com/private/backups")
    root = "/home/frappe/frappe-bench/sites"
    res = compose(
        world,
        "exec",
        "-T",
        "backend",
        "stat",
        "-c",
        "%F|%s|%n",
        "--",
        f"{root}/site1.example.com",
        f"{root}/site1.example.com/private/backups/a.sql.gz",
        f"{root}/site2.example.com/private/backups",
        f"{root}/nope",
    )
    lines = res.stdout.splitlines()
    assert lines[0] == f"directory|{(sites / 'site1.example.com').stat().st_size}|{root}/site1.example.com"
    assert lines[1] == f"regular file|5|{root}/site1.example.com/private/backups/a.sql.gz"
    assert lines[2].startswith("symbolic link|") and len(lines) == 3
    assert res.returncode == 1 and "No such file or directory" in res.stderr


def test_docker_stats_lists_running_containers_as_docker_prints_them(world):
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    world.doubles.set_container_stats("frappe_docker-backend-1", 12.5, 3 * 1024**3 // 2)
    res = run(world, "docker", "stats", "--no-stream", "--format", "json")
    assert res.returncode == 0, res.stderr
    rows = {row["Name"]: row for row in map(json.loads, res.stdout.splitlines())}
    assert set(rows) == set(world.doubles.running_containers())
    assert "frappe_docker-queue-long-1" not in rows and "frappe_docker-configurator-1" not in rows
    assert "fm__erp_localhost__frappe" in rows
    backend = rows["frappe_docker-backend-1"]
    assert set(backend) == {"BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs"}
    assert backend["CPUPerc"] == "12.50%" and backend["MemUsage"] == "1.5GiB / 15.51GiB"
    world.doubles.set_faults(daemon_down=True)
    res = run(world, "docker", "stats", "--no-stream", "--format", "json")
    assert res.returncode == 1 and res.stderr.strip() == DAEMON_DOWN


def test_docker_info_reports_the_data_root(world):
    res = run(world, "docker", "info", "--format", "{{.DockerRootDir}}")
    assert res.returncode == 0 and res.stdout.strip() == world.doubles.docker_root()
    world.doubles.set_docker_root("/srv/docker")
    assert run(world, "docker", "info", "--format", "{{.DockerRootDir}}").stdout.strip() == "/srv/docker"


# ---- bench, as frappe's sources print and do it (docs/doubles.md "bench")


def fm_exec(world, *argv):
    """What the agent (and FM itself) runs for bench work on an FM bench: compose exec, an argv, no shell."""
    return run(
        world,
        "docker",
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
        *argv,
    )


def test_bench_version_prints_an_indented_array_with_empty_commits_for_apps_without_a_checkout(world):
    apps = world.bench_path / "workspace" / "frappe-bench" / "apps"
    (apps / "erpnext").mkdir(parents=True)
    (apps / "erpnext" / ".commit").write_text("")  # not a git checkout, as in a built image
    world.doubles.set_faults(bench_warnings=["WARN: bench is installed in editable mode!"])
    res = fm_exec(world, "bench", "version", "--format", "json")
    assert res.returncode == 0, res.stderr
    warning, _, body = res.stdout.partition("\n")
    assert warning == "WARN: bench is installed in editable mode!"
    rows = json.loads(body)
    assert body == json.dumps(rows, indent=4) + "\n" and len(body.splitlines()) > len(rows)
    assert [r["app"] for r in rows] == ["erpnext", "frappe"]
    assert rows[0]["commit"] == "" and len(rows[1]["commit"]) == 7
    assert set(rows[0]) == {"app", "branch", "commit", "version"}


def test_bench_execute_evaluates_args_like_frappe_so_a_mangled_list_fails_the_query(world):
    site = "site1.example.com"
    good = compose(
        world, "exec", "-T", "backend", "bench", "--site", site, "execute", "frappe.db.count", "--args", '["User"]'
    )
    assert good.returncode == 0 and int(good.stdout.strip()) > 0
    # `[User]` is a NameError in eval: frappe passes the string itself, and counts rows of `tab[User]`.
    bad = compose(
        world, "exec", "-T", "backend", "bench", "--site", site, "execute", "frappe.db.count", "--args", "[User]"
    )
    assert bad.returncode == 1 and "Table '" in bad.stdout and ".tab[User]' doesn't exist" in bad.stdout
    # A bare name is a NameError too: the string becomes the one argument, so `--args User` works.
    bare = compose(
        world, "exec", "-T", "backend", "bench", "--site", site, "execute", "frappe.db.count", "--args", "User"
    )
    assert bare.returncode == 0 and bare.stdout.strip() == good.stdout.strip()
    kwargs = compose(
        world,
        "exec",
        "-T",
        "backend",
        "bench",
        "--site",
        site,
        "execute",
        "frappe.db.count",
        "--kwargs",
        "{'dt': 'User'}",
    )
    assert kwargs.returncode == 0 and kwargs.stdout.strip() == good.stdout.strip()


def test_bench_drop_site_archives_to_archived_sites_or_the_path_given(world):
    from support.world import COMPOSE_DB_ROOT_PASSWORD

    volume = world.doubles.volume_bench(world.compose_project)
    drop = [
        "exec",
        "-T",
        "backend",
        "bench",
        "drop-site",
        "--no-backup",
        "--force",
        "--db-root-password",
        COMPOSE_DB_ROOT_PASSWORD,
    ]
    res = compose(world, *drop[:5], "site1.example.com", *drop[5:])
    assert res.returncode == 0, res.stdout
    assert (volume / "archived" / "sites" / "site1.example.com" / "site_config.json").is_file()
    assert not (volume / "sites" / "site1.example.com").exists() and not (volume / "archived_sites").exists()
    res = compose(
        world,
        *drop[:5],
        "site2.example.com",
        *drop[5:],
        "--archived-sites-path",
        "/home/frappe/frappe-bench/sites/.agent-archive",
    )
    assert res.returncode == 0, res.stdout
    assert (volume / "sites" / ".agent-archive" / "site2.example.com" / "site_config.json").is_file()
    assert not (volume / "archived" / "sites" / "site2.example.com").exists()


def test_compose_exec_into_an_fm_bench_runs_bench_in_its_workspace_with_the_global_db(world):
    res = fm_exec(world, "bench", "--site", "erp.localhost", "list-apps", "--format", "json")
    assert res.returncode == 0 and json.loads(res.stdout) == {"erp.localhost": ["frappe", "erpnext"]}
    world.doubles.set_service(world.fm_project, "frappe", "exited", 0)
    res = fm_exec(world, "bench", "--site", "erp.localhost", "list-apps")
    assert res.returncode == 1 and 'service "frappe" is not running' in res.stderr


def test_fm_shell_requotes_the_command_as_fm_0_20_does(world):
    env = {"PATH": "/usr/bin:/bin", "FRAPPE_MANAGER_HOME": str(world.fm_home)}
    command = "bench --site erp.localhost execute frappe.db.count --args '[\"User\"]'"
    res = run(world, "fm", "-n", "shell", "erp.localhost", "-c", command, env=env)
    assert res.returncode == 1 and ".tab[User]' doesn't exist" in res.stdout


def test_fm_version_and_a_bench_needing_migration_as_fm_0_20_prints_them(world):
    """The fm double (kept for faults) says what the real fm 0.20.0 says (test_real_fm.py pins the real one)."""
    env = {"PATH": "/usr/bin:/bin", "FRAPPE_MANAGER_HOME": str(world.fm_home)}

    def run_double(*args):
        return subprocess.run(
            [world.fm_double, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=30
        )

    res = run_double("--version")
    assert res.returncode == 0 and res.stdout == "" and res.stderr.splitlines()[-1] == " 0.20.0"
    (world.bench_path / "bench_config.toml").write_text(
        'name = "erp.localhost"\n[migration_state]\nmigrated_to = "0.19.0"\n'
    )
    world.doubles.set_service(world.fm_project, "frappe", "exited", 0)
    for command in ("start", "restart", "stop"):  # the real fm 0.20.0 checks before stop too
        res = run_double("-n", command, "erp.localhost")
        assert res.returncode == 0 and "Bench migration required: erp.localhost (v0.19.0 → v0.20.0)" in res.stderr
        assert "Run: fm migrate erp.localhost" in res.stderr
    assert world.doubles.project(world.fm_project)["services"]["frappe"]["state"] == "exited"  # nothing was done
