"""Agent memory: under 30 MB RSS idle, and flat (+5 MB at most) while streaming 2 GiB.

Starts the real agent process (`python -m fmappliance.agent`), reads VmRSS from
/proc/<pid>/status after a few requests, then downloads a 2 GiB published backup (a sparse
file with a manifest written directly) while sampling VmRSS every 20 ms.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "doubles")]

from double_state import DoubleWorld  # noqa: E402
from measure import rss_mb, verdict  # noqa: E402
from support.config_factory import TEST_TOKEN, write_config  # noqa: E402
from support.world import AgentProcess, install_doubles, make_compose_stack, make_fm_bench  # noqa: E402

GOAL_IDLE_MB = 30.0
GOAL_GROWTH_MB = 5.0
SIZE = 2 * 1024**3
BACKUP_ID = "2026-01-01_02-00-00"


def get(url: str, token: bool = True) -> bytes:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {TEST_TOKEN}")
    with urllib.request.urlopen(req, timeout=60) as res:
        return res.read()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        doubles = DoubleWorld(root / "double-state")
        install_doubles(root / "bin")
        compose_path, _ = make_compose_stack(root, doubles)
        _, bench_path, _ = make_fm_bench(root, doubles)
        config_path = write_config(
            root,
            stacks={
                "prod": {"type": "compose", "path": str(compose_path)},
                "erp": {"type": "fm", "path": str(bench_path)},
            },
            agent={"docker_binary": str(root / "bin" / "docker"), "fm_binary": str(root / "bin" / "fm")},
        )
        import yaml

        config = yaml.safe_load(config_path.read_text())
        site_dir = Path(config["backups"]["base_path"]) / "prod" / "site1.example.com"
        site_dir.mkdir(parents=True)
        big = site_dir / f"{BACKUP_ID}.sql.gz"
        with open(big, "wb") as fh:
            fh.truncate(SIZE)  # sparse: the disk is not the subject here
        manifest = {
            "id": BACKUP_ID,
            "stack": "prod",
            "site": "site1.example.com",
            "created": "2026-01-01T02:00:00Z",
            "verified": True,
            "verification": "benchmark",
            "files": [{"name": big.name, "part": "database", "size": SIZE, "sha256": "0" * 64}],
        }
        (site_dir / f"{BACKUP_ID}.json").write_text(json.dumps(manifest))

        agent = AgentProcess(config_path, config["agent"]["port"], root / "agent.log").start()
        try:
            pid = agent.proc.pid
            for path in ("/", "/stacks", "/stacks/prod", "/jobs", "/backups/prod/site1.example.com"):
                get(agent.url + path)
            time.sleep(0.5)
            idle = rss_mb(pid)
            print(
                f"agent RSS idle (after a few requests): {idle:.1f} MB (goal < {GOAL_IDLE_MB:.0f} MB) "
                f"{verdict(idle < GOAL_IDLE_MB)}"
            )

            # One small ranged download first: first-use imports are not what the goal is about.
            warm = urllib.request.Request(
                f"{agent.url}/backups/prod/site1.example.com/{big.name}",
                headers={"Authorization": f"Bearer {TEST_TOKEN}", "Range": "bytes=0-1048575"},
            )
            with urllib.request.urlopen(warm, timeout=60) as res:
                res.read()
            samples = []
            done = threading.Event()

            def sample():
                while not done.is_set():
                    samples.append(rss_mb(pid))
                    time.sleep(0.02)

            sampler = threading.Thread(target=sample, daemon=True)
            before = rss_mb(pid)
            sampler.start()
            req = urllib.request.Request(f"{agent.url}/backups/prod/site1.example.com/{big.name}")
            req.add_header("Authorization", f"Bearer {TEST_TOKEN}")
            received = 0
            start = time.perf_counter()
            with urllib.request.urlopen(req, timeout=120) as res:
                while True:
                    chunk = res.read(1024 * 1024)
                    if not chunk:
                        break
                    received += len(chunk)
            elapsed = time.perf_counter() - start
            done.set()
            sampler.join()
            assert received == SIZE, received
            growth = max(samples) - before
            print(
                f"streamed {SIZE / 1024**3:.0f} GiB in {elapsed:.1f} s ({SIZE / elapsed / 1e6:.0f} MB/s); "
                f"RSS before {before:.1f} MB, peak {max(samples):.1f} MB: growth {growth:.1f} MB "
                f"(goal <= {GOAL_GROWTH_MB:.0f} MB) {verdict(growth <= GOAL_GROWTH_MB)}"
            )
        finally:
            agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
