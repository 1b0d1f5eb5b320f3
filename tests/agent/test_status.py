"""Stack status: both ps shapes, one-shot services, partial/stopped/unknown, cache, concurrency."""

from __future__ import annotations

import time

import pytest
from double_state import DAEMON_DOWN
from support.world import COMPOSE_SERVICES

from fmappliance.agent.inventory import Inventory
from fmappliance.agent.stacks import ComposeStack, compose_output
from fmappliance.agent.status import StatusBoard


def stack(client, name):
    return next(s for s in client.get("/stacks").json()["stacks"] if s["name"] == name)


@pytest.mark.parametrize("shape", ["lines", "array"])
def test_both_ps_json_shapes_give_the_same_status(client, world, shape):
    world.doubles.set_faults(ps_shape=shape)
    prod = stack(client, "prod")
    assert prod["status"] == "running" and prod["reason"] is None
    assert {s["service"] for s in prod["services"]} == set(COMPOSE_SERVICES)
    backend = next(s for s in prod["services"] if s["service"] == "backend")
    assert backend == {
        "service": "backend",
        "name": "frappe_docker-backend-1",
        "state": "running",
        "health": "",
        "status": "Up 2 hours",
        "exit_code": 0,
        "one_shot": False,
    }


def test_stacks_listing_has_the_documented_shape(client, world):
    body = client.get("/stacks").json()
    assert [s["name"] for s in body["stacks"]] == ["erp", "prod"]
    for s in body["stacks"]:
        assert set(s) == {
            "name",
            "type",
            "creates_sites",
            "path",
            "status",
            "reason",
            "services",
            "sites",
            "last_backups",
            "last_restore_tests",
            "needs_migration",
            "checked_at",
        }
        assert s["needs_migration"] is False
        assert s["checked_at"].endswith("Z")
        assert s["last_restore_tests"] == {site: None for site in s["sites"]}  # never tested yet
    # a restore may create a new site on a compose project, never on an fm bench (one site per bench)
    assert [(s["type"], s["creates_sites"]) for s in body["stacks"]] == [("fm", False), ("compose", True)]
    assert body["stacks"][0]["sites"] == ["erp.localhost"]
    assert body["stacks"][1]["sites"] == ["site1.example.com", "site2.example.com"]
    assert set(body["disk"]) == {"path", "free_bytes", "total_bytes"}


def test_configurator_that_exited_0_is_not_a_failure(client, world):
    prod = stack(client, "prod")
    configurator = next(s for s in prod["services"] if s["service"] == "configurator")
    assert configurator["state"] == "exited" and configurator["one_shot"] is True
    assert prod["status"] == "running"


def test_configurator_that_exited_non_zero_makes_the_stack_partial(client, world):
    world.doubles.set_service(world.compose_project, "configurator", "exited", 1)
    prod = stack(client, "prod")
    assert prod["status"] == "partial"
    assert "configurator failed" in prod["reason"]


def test_one_long_running_service_down_is_partial_with_the_reason(client, world):
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    prod = stack(client, "prod")
    assert prod["status"] == "partial"
    assert "queue-long (Exited (137)" in prod["reason"]


def test_all_services_exited_is_stopped(client, world):
    world.doubles.set_all(world.compose_project, "exited")
    assert stack(client, "prod")["status"] == "stopped"


def test_a_stack_without_containers_is_stopped(client, world):
    data = world.doubles.project(world.compose_project)
    for entry in data["services"].values():
        entry["state"] = "absent"
    world.doubles.save_project(world.compose_project, data)
    prod = stack(client, "prod")
    assert prod["status"] == "stopped" and prod["services"] == []


def test_fm_status_counts_main_services_not_workers(client, world):
    world.doubles.set_service(world.fm_project, "short-worker", "exited", 1)
    assert stack(client, "erp")["status"] == "running"
    client.services.status.invalidate("erp")
    world.doubles.set_service(world.fm_project, "frappe", "exited", 0)
    erp = stack(client, "erp")
    assert erp["status"] == "partial" and "frappe" in erp["reason"]


def test_fm_status_asks_compose_with_the_bench_compose_file(client, world):
    client.get("/stacks")
    ps = [a for a in world.doubles.argvs("docker") if "ps" in a and "-f" in a]
    assert ps == [["compose", "-f", str(world.bench_path / "docker-compose.yml"), "ps", "--all", "--format", "json"]]


def test_daemon_down_for_one_stack_makes_it_unknown_while_the_other_answers(client, world):
    world.doubles.set_faults(fail={"compose ps": {"rc": 1, "stderr": DAEMON_DOWN, "project": world.compose_project}})
    stacks = {s["name"]: s for s in client.get("/stacks").json()["stacks"]}
    assert stacks["prod"]["status"] == "unknown"
    assert stacks["prod"]["reason"].startswith("docker daemon not reachable: Cannot connect to the Docker daemon")
    assert stacks["erp"]["status"] == "running"


def test_daemon_down_everywhere_makes_every_stack_unknown(client, world):
    world.doubles.set_faults(daemon_down=True)
    for s in client.get("/stacks").json()["stacks"]:
        assert s["status"] == "unknown" and "daemon not reachable" in s["reason"]


def test_docker_without_the_compose_plugin_says_so_instead_of_pointing_at_docker_help(client, world):
    world.doubles.set_faults(no_compose_plugin=True)
    for s in client.get("/stacks").json()["stacks"]:
        assert s["status"] == "unknown"
        assert s["reason"] == "docker compose is not available: install the docker compose plugin"


def test_compose_error_is_unknown_with_its_message(client, world):
    world.doubles.set_faults(fail={"compose ps": {"rc": 14, "stderr": "yaml: line 3: mapping values are not allowed"}})
    prod = stack(client, "prod")
    assert prod["status"] == "unknown"
    assert "exit code 14" in prod["reason"] and "mapping values" in prod["reason"]


def test_a_secret_in_a_failing_ps_is_masked_in_the_reason(client, world):
    world.doubles.set_faults(fail={"compose ps": {"rc": 1, "stderr": "env error: DB_PASSWORD=hunter2 is invalid"}})
    prod = stack(client, "prod")
    assert prod["status"] == "unknown"
    assert "hunter2" not in prod["reason"] and "DB_PASSWORD=***" in prod["reason"]


def test_slow_stack_times_out_as_unknown_without_holding_up_the_others(world, make_client):
    world.write_config(agent={"status_timeout": 1})
    world.doubles.set_faults(ps_delay_projects={world.compose_project: 30})
    client = make_client()
    started = time.monotonic()
    stacks = {s["name"]: s for s in client.get("/stacks").json()["stacks"]}
    assert time.monotonic() - started < 8
    assert stacks["prod"]["status"] == "unknown" and "did not answer within 1 s" in stacks["prod"]["reason"]
    assert stacks["erp"]["status"] == "running"


def test_missing_docker_makes_stacks_unknown(world, make_client):
    world.write_config(agent={"docker_binary": "no-such-docker-binary"})
    client = make_client()
    for s in client.get("/stacks").json()["stacks"]:
        assert s["status"] == "unknown" and "docker not found" in s["reason"]


def test_stacks_are_asked_concurrently(world, make_client):
    # Each `ps` takes 2 s: asked one after the other, the second would start at least 2 s after the first.
    # Judged on when the double says each call started, not on the wall clock of the request.
    world.doubles.set_faults(ps_delay=2.0)
    world.doubles.clear_invocations()
    make_client().get("/stacks")
    starts = sorted(c["time"] for c in world.doubles.invocations("docker") if "ps" in c["argv"])
    assert len(starts) == 2
    assert starts[1] - starts[0] < 2.0


def test_cache_expires_after_its_ttl_and_invalidate_forgets_at_once(world):
    now = [1000.0]
    inventory = Inventory(world.config)
    board = StatusBoard(world.config, inventory, clock=lambda: now[0])
    try:

        def ps_count():
            return sum(1 for a in world.doubles.argvs("docker") if "ps" in a)

        board.one("erp")
        assert ps_count() == 1
        now[0] += 4
        board.one("erp")
        assert ps_count() == 1
        now[0] += 2  # past status_cache_seconds (5)
        board.one("erp")
        assert ps_count() == 2
        board.invalidate("erp")
        board.one("erp")
        assert ps_count() == 3
    finally:
        board.close()


def test_concurrent_requests_share_one_ps_call(world, make_client):
    import threading

    world.doubles.set_faults(ps_delay=0.5)
    client = make_client()
    threads = [threading.Thread(target=client.get, args=("/stacks/erp",)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for a in world.doubles.argvs("docker") if "ps" in a and "-f" in a) == 1


# ------------------------------------------------------------------ pure parsing


def test_parse_ps_accepts_both_shapes_and_skips_warnings():
    row = '{"Name":"p-backend-1","Service":"backend","State":"running","Health":"","Status":"Up","ExitCode":0}'
    lines = "WARN[0000] the attribute `version` is obsolete\n" + row + "\n" + row.replace("backend", "frontend") + "\n"
    array = "[" + row + "," + row.replace("backend", "frontend") + "]"
    assert [r["Service"] for r in compose_output.parse_ps(lines)] == ["backend", "frontend"]
    assert [r["Service"] for r in compose_output.parse_ps(array)] == ["backend", "frontend"]
    assert compose_output.parse_ps("[]") == [] and compose_output.parse_ps("") == []


def test_compute_status_rules():
    def svc(name, state, code=0):
        return {
            "service": name,
            "state": state,
            "exit_code": code,
            "status": state,
            "one_shot": name in compose_output.ONE_SHOT_SERVICES,
        }

    assert compose_output.compute_status([svc("backend", "running"), svc("configurator", "exited")]) == (
        "running",
        None,
    )
    assert compose_output.compute_status([svc("backend", "running"), svc("frontend", "restarting")])[0] == "partial"
    assert compose_output.compute_status([svc("backend", "exited"), svc("configurator", "exited", 1)])[0] == "stopped"
    assert compose_output.compute_status([svc("frappe", "running")], expected=("frappe", "nginx"))[0] == "partial"
    assert compose_output.compute_status([])[0] == "stopped"


def test_compose_argv_honours_project_and_files():
    project = ComposeStack({"path": "/opt/fd", "project": "prod", "files": ["compose.yaml", "overrides/db.yaml"]})
    argv = project.ps_argv("/usr/bin/docker")
    assert argv == [
        "/usr/bin/docker",
        "compose",
        "-p",
        "prod",
        "-f",
        "/opt/fd/compose.yaml",
        "-f",
        "/opt/fd/overrides/db.yaml",
        "--project-directory",
        "/opt/fd",
        "ps",
        "--all",
        "--format",
        "json",
    ]
