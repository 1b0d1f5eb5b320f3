"""Start-up benchmark: each zipapp listening within 3 s on first run (empty SHIV_ROOT, so it
extracts itself) and within 1 s after; RSS of each service at rest.

Run from the repo root with the venv python:  .venv/bin/python tests/benchmarks/bench_startup.py
Uses dist/ when `make build` made it, else builds into a temp dir. Always exits 0.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "install")]

from install_harness import built_or_build_dist, free_port, start_zipapp, stop  # noqa: E402
from measure import rss_mb, verdict  # noqa: E402
from support.config_factory import write_config  # noqa: E402
from support.units import service_env  # noqa: E402

GOALS = {"first": 3.0, "warm": 1.0, "rss_agent": 30, "rss_dashboard": 30}
REST_SECONDS = 2.0


def unit_environment(name: str) -> dict:
    """The environment as the systemd unit gives it (tests/support/units.py): none of the caller's PYTHON*
    variables -- PYTHONPATH would make the zipapp import a checkout's code, PYTHONDONTWRITEBYTECODE would make
    every "warm" start compile all modules again -- and the unit's own Environment= settings."""
    return service_env(name, keep_python=False)


def timed_start(pyz: Path, config: Path, port: int, cache: Path, log: Path) -> tuple[float, float]:
    start = time.monotonic()
    proc = start_zipapp(pyz, config, port, cache, log, env=unit_environment(pyz.stem))
    elapsed = time.monotonic() - start
    try:
        time.sleep(REST_SECONDS)
        rss = rss_mb(proc.pid)
    finally:
        stop(proc)
    return elapsed, rss


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    try:
        measure(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(tmp: Path) -> None:
    dist = built_or_build_dist(tmp)
    for name, rss_goal in (("fm-agent", GOALS["rss_agent"]), ("fm-dashboard", GOALS["rss_dashboard"])):
        port_key = "agent" if name == "fm-agent" else "dashboard"
        cache = tmp / f"cache-{name}"  # empty: the first start extracts
        results = []
        for run in ("first", "warm"):
            port = free_port()
            config = write_config(tmp, name=f"{name}-{run}.yaml", **{port_key: {"port": port}})
            results.append(timed_start(dist / f"{name}.pyz", config, port, cache, tmp / f"{name}.log"))
        (first, _), (warm, rss) = results
        print(
            f"{name}: listening {first:.2f} s after start with an empty SHIV_ROOT   goal < {GOALS['first']:.0f} s: {verdict(first < GOALS['first'])}"
        )
        print(
            f"{name}: listening {warm:.2f} s after start with SHIV_ROOT filled   goal < {GOALS['warm']:.0f} s: {verdict(warm < GOALS['warm'])}"
        )
        print(f"{name}: RSS at rest {rss:.1f} MB   goal < {rss_goal} MB: {verdict(rss < rss_goal)}")


if __name__ == "__main__":
    sys.exit(main())
