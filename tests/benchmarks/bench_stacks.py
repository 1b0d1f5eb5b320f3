"""GET /stacks over 30 and 100 compose stacks whose `ps` and site listing each take 150 ms.

The case: every stack is a compose stack with one site and no `sites:` list, so a cold
GET /stacks runs two docker commands per stack (`compose ps --format json` and the site
listing `compose exec ... find sites ...`).  The docker stand-in is an sh script that sleeps
150 ms and prints a canned answer (a realistic ~10 KB `ps` answer with every label), and logs
when it started and ended, using only `sleep` and shell builtins so that it costs almost no CPU: what is
measured is the agent's own overhead.

Goals: cold GET /stacks (status and site lists both expired) at most 1.5x the wall time of the
slowest single command; warm (cached) under 5 ms; memory flat with 100 stacks (repeated cold
rounds do not grow the process).
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "tests")]

from measure import rss_mb, verdict  # noqa: E402
from support.config_factory import TEST_TOKEN, write_config  # noqa: E402
from support.world import COMPOSE_SERVICES  # noqa: E402
from support.wsgi import WSGIClient  # noqa: E402

from fmappliance.agent.app import make_app  # noqa: E402
from fmappliance.config import load_config  # noqa: E402

STACK_COUNTS = (30, 100)
DELAY = 0.150
GOAL_RATIO = 1.5
GOAL_WARM_MS = 5.0
GOAL_MEMORY_GROWTH_MB = 3.0
COLD_ROUNDS = 5
MEMORY_ROUNDS = 10


def ps_answer(project: str) -> str:
    """What `docker compose ps --all --format json` prints for a frappe_docker stack: one object a line."""
    rows = []
    for service in COMPOSE_SERVICES:
        labels = ",".join(
            f"{k}={v}"
            for k, v in {
                "com.docker.compose.config-hash": "9f2c" * 16,
                "com.docker.compose.container-number": "1",
                "com.docker.compose.depends_on": "configurator:service_completed_successfully:false,db:service_started:false",
                "com.docker.compose.image": "sha256:" + "ab12" * 16,
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.project": project,
                "com.docker.compose.project.config_files": f"/srv/{project}/compose.yaml",
                "com.docker.compose.project.working_dir": f"/srv/{project}",
                "com.docker.compose.service": service,
                "com.docker.compose.version": "2.29.7",
                "org.opencontainers.image.source": "https://github.com/frappe/frappe_docker",
                "org.opencontainers.image.version": "15.44.0",
            }.items()
        )
        one_shot = service == "configurator"
        rows.append(
            json.dumps(
                {
                    "Command": '"docker-entrypoint.sh"',
                    "CreatedAt": "2026-11-30 04:00:00 +0000 UTC",
                    "ExitCode": 0,
                    "Health": "",
                    "ID": "0123456789ab",
                    "Image": "frappe/erpnext:v15.44.0",
                    "Labels": labels,
                    "LocalVolumes": "2",
                    "Mounts": "sites,logs",
                    "Name": f"{project}-{service}-1",
                    "Names": f"{project}-{service}-1",
                    "Networks": f"{project}_default",
                    "Ports": "",
                    "Project": project,
                    "Publishers": [],
                    "RunningFor": "2 hours ago",
                    "Service": service,
                    "Size": "0B",
                    "State": "exited" if one_shot else "running",
                    "Status": "Exited (0) 2 hours ago" if one_shot else "Up 2 hours",
                },
                separators=(",", ":"),
            )
        )
    return "\n".join(rows)


STAND_IN = """#!/bin/sh
# docker stand-in: 150 ms, then a canned answer; besides sleep, shell builtins only (dash starts
# in a fraction of bash's time). Times come from /proc/uptime (10 ms steps): no `date` process.
read start _ < /proc/uptime
sleep {delay}
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --project-directory) dir="$2"; shift 2;;
    ps) printf '%s\\n' '{ps}'; break;;
    find) printf 'sites/%s.example.com/site_config.json\\n' "${{dir##*/}}"; break;;
    *) shift;;
  esac
done
read end _ < /proc/uptime
printf '%s %s\\n' "$start" "$end" >> {log}
"""


def write_stand_in(root: Path) -> tuple[Path, Path]:
    log = root / "commands.log"
    docker = root / "docker"
    docker.write_text(STAND_IN.format(delay=DELAY, ps=ps_answer("stack"), log=log))
    docker.chmod(0o755)
    return docker, log


def uptime() -> float:
    """The clock the stand-in logs with (seconds since boot, 10 ms steps)."""
    with open("/proc/uptime") as fh:
        return float(fh.read().split()[0])


def command_spans(log: Path) -> list[tuple[float, float]]:
    spans = []
    for line in log.read_text().splitlines():
        start, end = line.split()
        spans.append((float(start), float(end)))
    return spans


def one_command_alone(docker: Path, stack_path: str) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(
            [str(docker), "compose", "--project-directory", stack_path, "ps", "--all", "--format", "json"],
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            check=True,
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def expire_everything(app, names) -> None:
    for name in names:
        app.agent_services.status.invalidate(name)  # the status and the site list


def cold_round(app, client, names, log: Path) -> tuple[float, float, float, float]:
    """(GET time, slowest command, when the last command exited, agent CPU) for one cold GET /stacks, in seconds."""
    expire_everything(app, names)
    log.write_text("")
    began = uptime()
    cpu = time.process_time()
    start = time.perf_counter()
    res = client.get("/stacks")
    took = time.perf_counter() - start
    cpu = time.process_time() - cpu
    stacks = res.json()["stacks"]
    assert res.status == 200 and all(s["status"] == "running" and len(s["sites"]) == 1 for s in stacks), res
    spans = command_spans(log)
    assert len(spans) == 2 * len(names), f"expected ps and site listing per stack, saw {len(spans)} commands"
    return took, max(end - s for s, end in spans), max(end for _, end in spans) - began, cpu


def measure(root: Path, docker: Path, log: Path, count: int) -> dict:
    stacks = {}
    for i in range(count):
        path = root / f"stack{i:03d}"
        path.mkdir(exist_ok=True)
        stacks[path.name] = {"type": "compose", "path": str(path)}
    config = load_config(
        write_config(root, stacks=stacks, agent={"docker_binary": str(docker), "status_cache_seconds": 60})
    )
    app = make_app(config)
    client = WSGIClient(app, token=TEST_TOKEN)
    names = sorted(stacks)
    try:
        rounds = [cold_round(app, client, names, log) for _ in range(COLD_ROUNDS)]
        warm, warm_cpu = [], []
        for _ in range(50):
            cpu = time.process_time()
            start = time.perf_counter()
            client.get("/stacks")
            warm.append(time.perf_counter() - start)
            warm_cpu.append(time.process_time() - cpu)
        gc.collect()
        rss_before = rss_mb(os.getpid())
        for _ in range(MEMORY_ROUNDS):
            cold_round(app, client, names, log)
        gc.collect()
        rss_after = rss_mb(os.getpid())
    finally:
        app.agent_services.close()
    return {
        "cold": statistics.median(r[0] for r in rounds),
        "slowest_command": statistics.median(r[1] for r in rounds),
        "last_exit": statistics.median(r[2] for r in rounds),
        "cpu": statistics.median(r[3] for r in rounds),
        "warm": statistics.median(warm),
        "warm_cpu": statistics.median(warm_cpu),
        "rss_before": rss_before,
        "rss_after": rss_after,
    }


def profile_cold(root: Path, docker: Path, log: Path, count: int) -> None:
    """cProfile of one cold GET /stacks, summed over the request thread and every status/sites worker.

    What it showed once redaction was linear: the workers wait in select() on docker's output and in
    fork_exec; no Python function of the agent's own comes near (``bench_stacks.py --profile``).
    """
    import cProfile
    import pstats

    from fmappliance.agent import inventory as inventory_module
    from fmappliance.agent import status as status_module

    profiles: list[cProfile.Profile] = []

    def profiled(fn):
        def run(*args, **kwargs):
            profile = cProfile.Profile()
            profile.enable()
            try:
                return fn(*args, **kwargs)
            finally:
                profile.disable()
                profiles.append(profile)

        return run

    status_module.StatusBoard._check = profiled(status_module.StatusBoard._check)
    inventory_module.Inventory.sites_for_display = profiled(inventory_module.Inventory.sites_for_display)
    stacks = {}
    for i in range(count):
        path = root / f"stack{i:03d}"
        path.mkdir(exist_ok=True)
        stacks[path.name] = {"type": "compose", "path": str(path)}
    config = load_config(
        write_config(root, stacks=stacks, agent={"docker_binary": str(docker), "status_cache_seconds": 60})
    )
    app = make_app(config)
    try:
        client = WSGIClient(app, token=TEST_TOKEN)
        client.get("/stacks")
        expire_everything(app, sorted(stacks))
        profiles.clear()
        main_profile = cProfile.Profile()
        main_profile.enable()
        client.get("/stacks")
        main_profile.disable()
    finally:
        app.agent_services.close()
    stats = pstats.Stats(main_profile)
    for profile in profiles:
        stats.add(profile)
    print(f"profile of one cold GET /stacks over {count} stacks (CPU and waits of all threads, by own time):")
    stats.sort_stats("tottime").print_stats(15)


def main() -> int:
    if "--profile" in sys.argv:
        with tempfile.TemporaryDirectory() as tmp:
            docker, log = write_stand_in(Path(tmp))
            profile_cold(Path(tmp), docker, log, 30)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docker, log = write_stand_in(root)
        (root / "probe").mkdir()
        alone = one_command_alone(docker, str(root / "probe"))
        print(
            f"one `docker compose ps` of the stand-in, alone: {alone * 1000:.0f} ms "
            f"({DELAY * 1000:.0f} ms delay + process start)"
        )
        for count in STACK_COUNTS:
            r = measure(root, docker, log, count)
            slowest = max(alone, r["slowest_command"])
            ratio = r["cold"] / slowest
            print(
                f"[{count} stacks, {2 * count} commands] cold GET /stacks: {r['cold'] * 1000:.0f} ms; slowest single "
                f"command: {slowest * 1000:.0f} ms; every command had exited {r['last_exit'] * 1000:.0f} ms after "
                f"the request began; cold = {ratio:.2f}x the slowest command (goal <= {GOAL_RATIO}x) "
                f"{verdict(ratio <= GOAL_RATIO)}"
            )
            print(
                f"[{count} stacks] (information) the agent's own CPU during the cold GET: {r['cpu'] * 1000:.0f} ms "
                f"(starting {2 * count} processes and reading their output); answered "
                f"{max(0.0, r['cold'] - r['last_exit']) * 1000:.0f} ms after the last command exited (10 ms clock steps)"
            )
            warm_ms = r["warm"] * 1000
            print(
                f"[{count} stacks] warm GET /stacks: {warm_ms:.2f} ms, CPU {r['warm_cpu'] * 1000:.2f} ms "
                f"(goal < {GOAL_WARM_MS:.0f} ms) {verdict(warm_ms < GOAL_WARM_MS)}"
            )
            growth = r["rss_after"] - r["rss_before"]
            print(
                f"[{count} stacks] memory over {MEMORY_ROUNDS} more cold rounds: {r['rss_before']:.1f} -> "
                f"{r['rss_after']:.1f} MiB, {growth:+.1f} MiB (goal: flat, < {GOAL_MEMORY_GROWTH_MB:.0f} MiB) "
                f"{verdict(growth < GOAL_MEMORY_GROWTH_MB)}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
