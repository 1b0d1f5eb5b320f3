"""What the real Frappe Manager 0.20.0 does, pinned by running it against the docker double.

The agent relies on each of these; the facts doc (docs/doubles.md, "Frappe Manager") names them.
The docker commands are read from the double's invocation log: that is exactly what FM sent.
"""

from __future__ import annotations

import subprocess

import pytest
from support.fm_home import FM_VERSION, bench_migrated_to

BENCH = "erp.localhost"
pytestmark = pytest.mark.usefixtures("real_fm")


def fm(world, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run the real fm as the agent does (minimal env, stdin /dev/null); its result and the docker argvs it sent."""
    world.doubles.clear_invocations()
    res = subprocess.run(
        [world.fm, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(world.root),
            "LANG": "C.UTF-8",
            "FRAPPE_MANAGER_HOME": str(world.fm_home),
        },
        cwd=world.root,
        timeout=60,
    )
    return res, world.doubles.argvs("docker")


def compose_calls(world, argvs, name="docker-compose.yml"):
    """The compose subcommands sent for one of the bench's files (without `docker compose -f FILE`)."""
    prefix = ["compose", "-f", str(world.bench_path / name)]
    return [a[3:] for a in argvs if a[:3] == prefix]


def states(world) -> dict[str, str]:
    return {svc: e["state"] for svc, e in world.doubles.project(world.fm_project)["services"].items()}


def test_fm_version_is_the_one_the_world_lays_out_and_is_printed_on_stderr(world, real_fm):
    res, argvs = fm(world, "--version")
    assert res.returncode == 0 and res.stdout == ""
    assert res.stderr.split()[-1] == FM_VERSION and argvs == []
    # invoked as `fm`, 0.20 warns about the rename first (on stderr: stdout stays clean); as `fmx` it does not
    warned = "'fm' is being renamed to 'fmx'" in res.stderr.splitlines()[0]
    assert warned == (real_fm.name == "fm")


def test_every_command_first_asks_docker_for_a_server_and_checks_the_global_services(world):
    res, argvs = fm(world, "-n", "stop", BENCH)
    assert res.returncode == 0, res.stderr
    assert argvs[0] == ["version", "--format", "json"]
    assert argvs[1] == [
        "compose",
        "-f",
        str(world.fm_home / "services" / "docker-compose.yml"),
        "ps",
        "--all",
        "--format",
        "json",
    ]


def test_stop_stops_the_main_and_the_workers_files_with_a_10_s_timeout(world):
    res, argvs = fm(world, "-n", "stop", BENCH)
    assert res.returncode == 0 and res.stdout == ""
    assert compose_calls(world, argvs) == [["stop", "--timeout", "10"]]
    assert compose_calls(world, argvs, "docker-compose.workers.yml") == [["stop", "--timeout", "10"]]
    assert set(states(world).values()) == {"exited"}


def test_start_checks_images_brings_both_files_up_and_waits_for_db_and_redis(world):
    fm(world, "-n", "stop", BENCH)
    res, argvs = fm(world, "-n", "start", BENCH)
    assert res.returncode == 0, res.stderr
    assert ["images", "--format", "json"] in argvs
    calls = compose_calls(world, argvs)
    assert calls[0] == ["up", "--detach", "--pull", "never"]
    exec_prefix = ["exec", "--user", "frappe", "--workdir", "/workspace/frappe-bench", "frappe", "/bin/bash", "-c"]
    assert calls[1:] == [
        exec_prefix + ["wait-for-it -t 120 global-db:3306"],
        exec_prefix + ["wait-for-it -t 120 fm__erp_localhost__redis-cache:6379"],
        exec_prefix + ["wait-for-it -t 120 fm__erp_localhost__redis-queue:6379"],
    ]
    assert compose_calls(world, argvs, "docker-compose.workers.yml") == [["up", "--detach", "--pull", "never"]]
    assert set(states(world).values()) == {"running"}
    # start saves bench_config.toml back (with tomlkit<0.15.3 it stays readable: no migration is asked for)
    assert bench_migrated_to(world.bench_path) == FM_VERSION
    res, _ = fm(world, "-n", "restart", BENCH)
    assert "migration required" not in res.stderr


def test_start_refuses_when_fm_images_are_missing_locally(world):
    world.doubles.set_images([])
    res, argvs = fm(world, "-n", "start", BENCH)
    assert res.returncode == 1
    assert "Docker image 'ghcr.io/rtcamp/frappe-manager-frappe:v0.20.0' is not available" in res.stderr
    assert not [a for a in argvs if "up" in a]


def test_restart_restarts_supervisor_in_web_schedule_and_workers(world):
    res, argvs = fm(world, "-n", "restart", BENCH)
    assert res.returncode == 0 and res.stdout == ""
    restarts = [a[3:] for a in argvs if "supervisorctl" in a]
    assert restarts == [
        ["exec", "--user", "frappe", svc, "supervisorctl", "-c", "/opt/user/supervisord.conf", "restart", "all"]
        for svc in ("frappe", "socketio", "schedule", "short-worker", "long-worker")
    ]
    # web and schedule through the main file, workers through the workers file of the same project
    assert [a[2].endswith("workers.yml") for a in argvs if "supervisorctl" in a] == [False] * 3 + [True] * 2
    # after each, FM looks for the supervisor socket -- always through the main file
    sockets = [a[-1] for a in compose_calls(world, argvs) if a[-3:-1] == ["test", "-e"]]
    assert sockets == [
        f"/fm-sockets/{s}.sock" for s in ("frappe", "socketio", "schedule", "short-worker", "long-worker")
    ]


def test_restart_with_frappe_down_says_so_and_still_exits_0(world):
    """A trap: `fm restart` skips a service that is not running and reports success."""
    world.doubles.set_service(world.fm_project, "frappe", "exited", 1)
    res, argvs = fm(world, "-n", "restart", BENCH)
    assert res.returncode == 0
    assert "Service frappe not running." in res.stderr
    assert states(world)["frappe"] == "exited"


def test_restart_fails_when_supervisorctl_fails(world):
    world.doubles.set_faults(fail={"supervisorctl": {"rc": 2, "stderr": "unix:///tmp/supervisor.sock refused"}})
    res, _ = fm(world, "-n", "restart", BENCH)
    assert res.returncode == 1
    assert "Failed to restart supervisor for frappe" in res.stderr


def test_shell_c_requotes_the_command_double_quotes_are_lost(world):
    """FM builds `/bin/bash -c "<command>"` and shlex-splits it: every `"` and `\\` in the command is consumed."""
    command = """bench --site erp.localhost execute frappe.db.count --args '["User"]'"""
    res, argvs = fm(world, "-n", "shell", BENCH, "-c", command)
    sent = compose_calls(world, argvs)[-1]
    assert sent == [
        "exec",
        "--user",
        "frappe",
        "--workdir",
        "/workspace/frappe-bench",
        "frappe",
        "/bin/bash",
        "-c",
        "bench --site erp.localhost execute frappe.db.count --args '[User]'",
    ]
    # a command without double quotes or backslashes passes intact
    res, argvs = fm(world, "-n", "shell", BENCH, "-c", "bench --site erp.localhost list-apps --format json")
    assert compose_calls(world, argvs)[-1][-1] == "bench --site erp.localhost list-apps --format json"
    assert res.returncode == 0 and res.stdout.strip() == '{"erp.localhost": ["frappe", "erpnext"]}'


def test_shell_c_passes_the_exit_code_through_and_needs_frappe_running(world):
    res, _ = fm(world, "-n", "shell", BENCH, "-c", "bench --site erp.localhost no-such-command")
    assert res.returncode == 2 and "No such command" in res.stdout
    world.doubles.set_service(world.fm_project, "frappe", "exited", 0)
    res, argvs = fm(world, "-n", "shell", BENCH, "-c", "bench version")
    assert res.returncode == 1
    assert "Cannot execute command. Compose service 'frappe' not running!" in res.stderr
    assert not [a for a in argvs if "exec" in a]


@pytest.mark.parametrize("command", [["start"], ["restart"], ["stop"], ["shell", "-c", "bench version"]])
def test_a_bench_needing_migration_makes_every_command_a_no_op_that_exits_0(world, command):
    world.make_bench_need_migration(migrated_to="0.19.0")
    before = states(world)
    res, argvs = fm(world, "-n", command[0], BENCH, *command[1:])
    assert res.returncode == 0 and res.stdout == ""
    assert f"Bench migration required: {BENCH} (v0.19.0 → v{FM_VERSION})" in res.stderr
    assert f"Run: fm migrate {BENCH}" in res.stderr
    # nothing was sent to the bench's containers: only the daemon and global services checks
    assert not compose_calls(world, argvs) and not compose_calls(world, argvs, "docker-compose.workers.yml")
    assert states(world) == before


def test_unknown_bench_and_daemon_down_exit_1(world):
    res, _ = fm(world, "-n", "restart", "nope.localhost")
    assert res.returncode == 1 and "Bench not found at" in res.stderr
    world.doubles.set_faults(daemon_down=True)
    res, argvs = fm(world, "-n", "restart", BENCH)
    assert res.returncode == 1 and "Docker daemon not running" in res.stderr
    assert argvs == [["version", "--format", "json"]]


def test_logs_of_a_service_is_compose_logs_of_the_main_file(world):
    world.doubles.write_log(world.fm_project, "frappe", "hello from frappe")
    res, argvs = fm(world, "-n", "logs", BENCH, "--service", "frappe")
    assert res.returncode == 0
    assert compose_calls(world, argvs)[-1] == ["logs", "frappe"]
    assert "fm__erp_localhost__frappe  | hello from frappe" in res.stdout


def test_fm_writes_the_whole_shell_command_line_into_its_own_log(world):
    """Why no secret may travel through `fm shell -c`: FM logs its argv (and the docker argv) in <home>/logs/fm.log."""
    res, _ = fm(world, "-n", "shell", BENCH, "-c", "bench --site erp.localhost list-apps --password not-a-secret-7q")
    assert res.returncode == 0, res.stderr
    assert "not-a-secret-7q" in (world.fm_home / "logs" / "fm.log").read_text()
