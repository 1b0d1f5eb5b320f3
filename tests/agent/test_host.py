"""GET /host: load and memory from /proc, free space, per-stack CPU and memory from `docker stats`."""

from __future__ import annotations

import shutil

import pytest

from fmappliance.agent.container_stats import parse_percent, parse_size, parse_stats


def running_containers(client, stack):
    status = next(s for s in client.get("/stacks").json()["stacks"] if s["name"] == stack)
    return [s["name"] for s in status["services"] if s["state"] == "running"]


def test_load_and_memory_are_read_from_proc(client, tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "loadavg").write_text("0.52 0.61 0.70 1/234 5678\n")
    (proc / "meminfo").write_text(
        "MemTotal:        8000000 kB\nMemFree:          500000 kB\n"
        "MemAvailable:    3000000 kB\nBuffers:          100000 kB\n"
    )
    client.services.host.proc_root = str(proc)
    body = client.get("/host").json()
    assert body["load_average"] == [0.52, 0.61, 0.70]
    assert body["memory"] == {
        "total_bytes": 8000000 * 1024,
        "available_bytes": 3000000 * 1024,
        "used_bytes": 5000000 * 1024,
    }


def read_real_proc():
    with open("/proc/loadavg") as fh:
        load = [float(x) for x in fh.read().split()[:3]]
    info = {}
    with open("/proc/meminfo") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            info[key] = int(rest.split()[0]) * 1024
    return load, info["MemTotal"], info["MemTotal"] - info["MemAvailable"]


def test_the_real_proc_figures_match(client):
    before = read_real_proc()
    body = client.get("/host").json()
    after = read_real_proc()
    # The kernel updates the load average every 5 s: the answer is the figure before or after the request.
    assert body["load_average"] in (before[0], after[0])
    assert body["memory"]["total_bytes"] == before[1]
    low, high = sorted((before[2], after[2]))
    # Other processes allocate meanwhile: used memory lies between the two readings, give or take 64 MiB.
    assert low - (64 << 20) <= body["memory"]["used_bytes"] <= high + (64 << 20)


def test_per_stack_cpu_and_memory_add_up_docker_stats_of_the_running_containers(client, world):
    world.doubles.set_container_stats("frappe_docker-backend-1", 12.5, 3 * 1024**3 // 2)  # "1.5GiB"
    world.doubles.set_service(world.compose_project, "queue-long", "exited", 137)
    body = client.get("/host").json()
    assert body["stats_reason"] is None
    by_name = {s["name"]: s for s in body["stacks"]}
    for stack in ("prod", "erp"):
        names = running_containers(client, stack)
        figures = [world.doubles.container_stats(n) for n in names]
        assert by_name[stack]["containers"] == len(names)
        assert by_name[stack]["cpu_percent"] == pytest.approx(sum(f["cpu_percent"] for f in figures), abs=0.005)
        assert by_name[stack]["memory_bytes"] == sum(f["memory_bytes"] for f in figures)
    assert "frappe_docker-queue-long-1" not in running_containers(client, "prod")
    assert "frappe_docker-backend-1" in running_containers(client, "prod")


def test_docker_stats_is_cached_like_the_status(client, world):
    client.get("/host")
    world.doubles.clear_invocations()
    client.get("/host")
    assert [a for a in world.doubles.argvs("docker") if a[0] in ("stats", "info")] == []


def test_disks_show_the_backups_and_dockers_data_root(client, world):
    disks = {d["name"]: d for d in client.get("/host").json()["disks"]}
    assert disks["backups"]["path"] == world.config["backups"]["base_path"]
    root = world.doubles.docker_root()
    assert disks["docker"]["path"] == root and disks["docker"]["reason"] is None
    assert disks["docker"]["total_bytes"] == shutil.disk_usage(root).total
    assert abs(disks["docker"]["free_bytes"] - shutil.disk_usage(root).free) < 256 << 20


def test_docker_down_leaves_the_host_figures_and_says_why(client, world):
    world.doubles.set_faults(daemon_down=True)
    body = client.get("/host").json()
    assert "docker daemon not reachable" in body["stats_reason"]
    assert all(s["cpu_percent"] is None and s["memory_bytes"] is None for s in body["stacks"])
    disks = {d["name"]: d for d in body["disks"]}
    assert disks["docker"]["free_bytes"] is None and "Cannot connect" in disks["docker"]["reason"]
    assert disks["backups"]["free_bytes"] > 0 and len(body["load_average"]) == 3


def test_host_needs_the_token(client):
    assert client.get("/host", token=False).status == 401


@pytest.mark.parametrize(
    "text, expected",
    [
        ("52.16MiB", int(52.16 * 1024**2)),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("512B", 512),
        ("1.2kB", 1200),
        ("0B", 0),
        ("--", None),
        ("", None),
    ],
)
def test_docker_sizes_are_read_as_docker_prints_them(text, expected):
    assert parse_size(text) == expected


def test_stats_lines_with_missing_figures_and_noise_are_tolerated():
    output = (
        "WARNING: No memory limit support\n"
        '{"CPUPerc":"--","MemUsage":"-- / --","Name":"a"}\n'
        '{"CPUPerc":"0.50%","MemUsage":"10MiB / 1GiB","Name":"b"}\nnot json\n'
    )
    assert parse_stats(output) == {
        "a": {"cpu_percent": None, "memory_bytes": None},
        "b": {"cpu_percent": 0.5, "memory_bytes": 10 * 1024**2},
    }
    assert parse_percent("12.25%") == 12.25
