"""GET /stacks over 30 compose stacks whose `docker compose ps` takes 150 ms (issue 2 §6).

Goals: a cold GET /stacks at most 1.5x the latency of one such `ps` call (asking the stacks
one after another would be 30x); a warm (cached) GET /stacks under 5 ms.  The `ps` calls are
made by the docker test double with its `ps_delay` fault, so process start-up costs the same
on both sides of the ratio.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "doubles")]

from double_state import DoubleWorld  # noqa: E402
from measure import verdict  # noqa: E402
from support.agent_wsgi import WsgiClient  # noqa: E402
from support.config_factory import write_config  # noqa: E402
from support.world import install_doubles, make_compose_stack  # noqa: E402

from fmappliance.agent.app import make_app  # noqa: E402
from fmappliance.config import load_config  # noqa: E402

STACKS = 30
PS_DELAY = 0.150
GOAL_RATIO = 1.5
GOAL_WARM_MS = 5.0


MINIMAL_DOCKER = """#!/bin/sh
# A docker stand-in that costs almost no CPU: isolates the agent's own overhead.
case "$*" in
  *" ps "*) sleep {delay}; echo '{row}';;
  *" find "*) echo "sites/$(basename "$4").example.com/site_config.json";;
esac
"""
ROW = '{"Name":"p-backend-1","Service":"backend","State":"running","Health":"","Status":"Up 2 hours","ExitCode":0}'


def time_one(argv) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_stacks(root, docker, stacks) -> tuple[float, float, float]:
    """Median GET /stacks: first after start (nothing cached), status-cold, warm; in seconds.

    Status-cold is the figure the goal is about: the status cache (a few seconds) is empty while
    the site lists, kept for a minute and read at start, are known.
    """
    first, cold, warm = [], [], []
    for ttl, samples in ((0, cold), (60, warm)):
        config = load_config(
            write_config(
                root,
                stacks=stacks,
                agent={
                    "docker_binary": str(docker),
                    "fm_binary": str(root / "bin" / "fm"),
                    "status_cache_seconds": ttl,
                },
            )
        )
        app = make_app(config)
        client = WsgiClient(app)
        try:
            start = time.perf_counter()
            res = client.get("/stacks")
            first.append(time.perf_counter() - start)
            assert res.status == 200 and all(s["status"] == "running" for s in res.json()["stacks"]), res
            for _ in range(5 if ttl == 0 else 20):
                start = time.perf_counter()
                client.get("/stacks")
                samples.append(time.perf_counter() - start)
        finally:
            app.agent_services.close()
    return statistics.median(first), statistics.median(cold), statistics.median(warm)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        doubles = DoubleWorld(root / "double-state")
        install_doubles(root / "bin")
        stacks = {}
        for i in range(STACKS):
            path, _ = make_compose_stack(root, doubles, name=f"stack{i:02d}", sites=(f"stack{i:02d}.example.com",))
            stacks[f"stack{i:02d}"] = {"type": "compose", "path": str(path)}
        doubles.set_faults(ps_delay=PS_DELAY)
        minimal = root / "bin" / "minimal-docker"
        minimal.write_text(MINIMAL_DOCKER.format(delay=PS_DELAY, row=ROW))
        minimal.chmod(0o755)

        results = []
        for label, docker in (("docker test double", root / "bin" / "docker"), ("minimal sh docker", minimal)):
            single = time_one(
                [
                    str(docker),
                    "compose",
                    "--project-directory",
                    stacks["stack00"]["path"],
                    "ps",
                    "--all",
                    "--format",
                    "json",
                ]
            )
            results.append((label, single, *time_stacks(root, docker, stacks)))

        for label, single, first, cold, _warm in results:
            ratio = cold / single
            # The goal is judged with the sh stand-in: a `ps` that takes 150 ms waiting on the daemon, as the
            # issue describes. The Python double also burns ~35 ms of CPU per call, which 2 cores cannot hide.
            judged = verdict(ratio <= GOAL_RATIO) if label == "minimal sh docker" else "(information)"
            print(
                f"[{label}] one `docker compose ps` ({PS_DELAY * 1000:.0f} ms delay): {single * 1000:.0f} ms; "
                f"GET /stacks over {STACKS} stacks, status not cached: {cold * 1000:.0f} ms = {ratio:.2f}x "
                f"(goal <= {GOAL_RATIO}x; serial would be ~{STACKS}x) {judged}"
            )
            print(
                f"[{label}] first GET /stacks after start (ps + site list from each container): "
                f"{first * 1000:.0f} ms = {first / single:.2f}x (information)"
            )
        warm_ms = results[0][4] * 1000
        print(
            f"GET /stacks warm (cached): {warm_ms:.2f} ms (goal < {GOAL_WARM_MS:.0f} ms) {verdict(warm_ms < GOAL_WARM_MS)}"
        )
        print(
            "note: each `ps` of the Python double costs ~35 ms of CPU to start; 30 of them on 2 cores add ~0.5 s "
            "that no scheduling can hide. The minimal sh stand-in shows the agent's own overhead."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
