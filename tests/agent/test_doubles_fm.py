"""The docker double answers what the real Frappe Manager sends (docs/doubles.md, "What the real `fm`
0.20.0 sends to docker"); test_real_fm.py drives it with the real fm, these pin the double alone."""

from __future__ import annotations

import json
import subprocess


def docker(world, *args):
    return subprocess.run(
        [world.docker, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )


def bench_compose(world, *args, workers=False):
    name = "docker-compose.workers.yml" if workers else "docker-compose.yml"
    return docker(world, "compose", "-f", str(world.bench_path / name), *args)


EXEC = ["exec", "--user", "frappe", "--workdir", "/workspace/frappe-bench", "frappe"]


def test_bash_c_runs_one_simple_command_with_quotes_removed_as_bash_does(world):
    res = bench_compose(world, *EXEC, "/bin/bash", "-c", "bench --site 'erp.localhost' list-apps --format \"json\"")
    assert res.returncode == 0 and json.loads(res.stdout) == {"erp.localhost": ["frappe", "erpnext"]}
    # the bench of an fm bench is its workspace on the host, seen at /workspace/frappe-bench
    res = bench_compose(world, *EXEC, "/bin/bash", "-c", "cat sites/erp.localhost/site_config.json")
    assert json.loads(res.stdout) == {"db_name": "_erp_localhost"}


def test_bash_c_refuses_shell_syntax_it_does_not_run(world):
    for command in ("bench version && rm -rf sites", "bench version > /tmp/x", "echo $HOME", "bench `id`"):
        res = bench_compose(world, *EXEC, "/bin/bash", "-c", command)
        assert res.returncode == 2 and "one simple command" in res.stderr, command


def test_supervisorctl_and_the_socket_check(world):
    res = bench_compose(
        world,
        "exec",
        "--user",
        "frappe",
        "frappe",
        "supervisorctl",
        "-c",
        "/opt/user/supervisord.conf",
        "restart",
        "all",
    )
    assert res.returncode == 0 and res.stdout.splitlines() == [
        "frappe-bench-frappe-web: stopped",
        "frappe-bench-frappe-web: started",
    ]
    assert (
        bench_compose(world, "exec", "--user", "frappe", "frappe", "test", "-e", "/fm-sockets/frappe.sock").returncode
        == 0
    )
    world.doubles.set_faults(fail={"supervisorctl": 2})
    assert (
        bench_compose(
            world,
            "exec",
            "--user",
            "frappe",
            "schedule",
            "supervisorctl",
            "-c",
            "/opt/user/supervisord.conf",
            "restart",
            "all",
        ).returncode
        == 2
    )


def test_exec_reaches_a_worker_through_the_main_file_as_compose_does(world):
    """compose `exec` only needs the project name: FM checks a worker's socket through the main file."""
    res = bench_compose(
        world, "exec", "--user", "frappe", "short-worker", "test", "-e", "/fm-sockets/short-worker.sock"
    )
    assert res.returncode == 0
    world.doubles.set_service(world.fm_project, "short-worker", "exited")
    res = bench_compose(
        world, "exec", "--user", "frappe", "short-worker", "test", "-e", "/fm-sockets/short-worker.sock"
    )
    assert res.returncode == 1 and 'service "short-worker" is not running' in res.stderr


def test_wait_for_it_answers_for_running_services_and_containers_at_once(world):
    res = bench_compose(world, *EXEC, "/bin/bash", "-c", "wait-for-it -t 120 global-db:3306")
    assert res.returncode == 0 and "global-db:3306 is available after 0 seconds" in res.stderr
    world.doubles.set_service(world.fm_project, "redis-cache", "exited")
    res = bench_compose(world, *EXEC, "/bin/bash", "-c", "wait-for-it -t 120 fm__erp_localhost__redis-cache:6379")
    assert res.returncode == 124 and "timeout occurred after waiting 120 seconds" in res.stderr


def test_images_lists_the_local_image_store_one_object_per_line(world):
    rows = [json.loads(line) for line in docker(world, "images", "--format", "json").stdout.splitlines()]
    assert {"Repository": "mariadb", "Tag": "10.6"}.items() <= next(
        r for r in rows if r["Repository"] == "mariadb"
    ).items()
    world.doubles.set_images([])
    assert docker(world, "images", "--format", "json").stdout == ""


def test_a_missing_compose_file_is_compose_s_error(world):
    (world.bench_path / "docker-compose.yml").unlink()
    res = bench_compose(world, "ps", "--all", "--format", "json")
    assert res.returncode == 1
    assert res.stderr.strip() == f"open {world.bench_path / 'docker-compose.yml'}: no such file or directory"
