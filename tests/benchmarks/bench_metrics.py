"""GET /metrics on the agent: a warm scrape must cost under 5 ms (Prometheus asks every 15 s).

The scene is a busy appliance: 10 compose stacks with 3 sites each, 20 published backups per
site (600 manifests), and a full job store (5000 ended jobs). "Warm" means the stack status is
cached and no site's backup directory changed since the last scrape: the state of an appliance
between two backups. The first scrape (every manifest read) and a scrape through the dashboard (scrape
token, the agent asked over HTTP, scheduler series) are printed for information.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "doubles")]

from double_state import DoubleWorld  # noqa: E402
from measure import verdict  # noqa: E402
from support.config_factory import TEST_TOKEN, write_config  # noqa: E402
from support.world import install_doubles, make_compose_stack  # noqa: E402
from support.wsgi import WSGIClient  # noqa: E402

from fmappliance.actions_table import ACTIONS  # noqa: E402
from fmappliance.agent.app import make_app  # noqa: E402
from fmappliance.agent.jobs import JobManager  # noqa: E402
from fmappliance.config import load_config  # noqa: E402

STACKS, SITES, BACKUPS, JOBS = 10, 3, 20, 5000
GOAL_WARM_MS = 5.0


def write_manifests(base: Path, stack: str, site: str) -> None:
    site_dir = base / stack / site
    site_dir.mkdir(parents=True)
    start = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)
    for n in range(BACKUPS):
        backup_id = (start + timedelta(days=n)).strftime("%Y-%m-%d_%H-%M-%S")
        files = [
            {"name": f"{backup_id}.sql.gz", "part": "database", "size": 1000 + n, "sha256": "0" * 64},
            {"name": f"{backup_id}.files.tar", "part": "files", "size": 20480, "sha256": "1" * 64},
        ]
        manifest = {
            "id": backup_id,
            "stack": stack,
            "site": site,
            "created": backup_id.replace("_", "T")[:11] + backup_id[11:].replace("-", ":") + "Z",
            "verified": True,
            "verification": "bench",
            "files": files,
        }
        (site_dir / f"{backup_id}.json").write_text(json.dumps(manifest))


def fill_job_store(state_dir: Path) -> None:
    JobManager(str(state_dir)).close()  # creates the schema
    db = sqlite3.connect(state_dir / "jobs.sqlite3")
    rows = []
    for n in range(JOBS):
        action = ACTIONS[n % len(ACTIONS)]
        started = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=n)
        stamp = started.strftime("%Y-%m-%dT%H:%M:%SZ")
        finished = (started + timedelta(seconds=n % 900)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rows.append(
            (
                f"{n:016x}",
                action,
                f"stack{n % STACKS:02d}",
                None,
                "succeeded" if n % 7 else "failed",
                stamp,
                stamp,
                finished,
            )
        )
    db.executemany(
        "INSERT INTO jobs (id, action, stack, site, status, created, started, finished)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    db.close()


def time_dashboard_relay(root: Path, agent_app) -> float:
    """Median ms of the dashboard's /metrics: the agent app served by waitress, the dashboard in-process."""
    import os
    import threading

    from waitress.server import create_server

    from fmappliance.dashboard.app import make_app as make_dashboard

    server = create_server(agent_app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    token_file = root / "metrics.token"
    token_file.write_text("m" * 40)
    os.chmod(token_file, 0o600)
    config = load_config(
        write_config(
            root,
            name="dashboard.yaml",
            dashboard={"agent_url": f"http://127.0.0.1:{server.effective_port}", "metrics_token_file": str(token_file)},
        )
    )
    dashboard = WSGIClient(make_dashboard(config))
    headers = {"Authorization": "Bearer " + "m" * 40}
    try:
        assert b"fmappliance_agent_up 1" in dashboard.get("/metrics", headers=headers).body
        times = []
        for _ in range(100):
            start = time.perf_counter()
            dashboard.get("/metrics", headers=headers)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        server.close()


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        doubles = DoubleWorld(root / "double-state")
        install_doubles(root / "bin")
        stacks = {}
        for i in range(STACKS):
            name = f"stack{i:02d}"
            sites = tuple(f"s{j}.{name}.example.com" for j in range(SITES))
            path, _ = make_compose_stack(root, doubles, name=name, sites=sites)
            stacks[name] = {"type": "compose", "path": str(path), "sites": list(sites)}
            for site in sites:
                write_manifests(root / "backups", name, site)
        config = load_config(
            write_config(
                root, stacks=stacks, agent={"docker_binary": str(root / "bin" / "docker"), "status_cache_seconds": 3600}
            )
        )
        fill_job_store(Path(config["agent"]["state_dir"]))
        app = make_app(config)
        client = WSGIClient(app, token=TEST_TOKEN)
        try:
            client.get("/stacks")  # the status cache is filled, as the dashboard's pages keep it
            start = time.perf_counter()
            first = client.get("/metrics")
            first_ms = (time.perf_counter() - start) * 1000
            assert first.status == 200 and b'fmappliance_backups_kept{stack="stack09"' in first.body, first
            warm = []
            for _ in range(200):
                start = time.perf_counter()
                res = client.get("/metrics")
                warm.append((time.perf_counter() - start) * 1000)
            # Only free space may move between scrapes (other processes write to the disk).
            steady = [line for line in res.body.splitlines() if not line.startswith(b"fmappliance_backup_disk_free")]
            assert steady == [
                line for line in first.body.splitlines() if not line.startswith(b"fmappliance_backup_disk_free")
            ]
            relay_ms = time_dashboard_relay(root, app)
        finally:
            app.agent_services.close()
    warm_ms = statistics.median(warm)
    print(
        f"scene: {STACKS} stacks x {SITES} sites, {BACKUPS} backups per site, {JOBS} jobs in the store; "
        f"{len(first.body)} bytes of metrics"
    )
    print(f"first scrape (every manifest read): {first_ms:.1f} ms (information)")
    print(
        f"warm scrape: median {warm_ms:.2f} ms, p90 {sorted(warm)[len(warm) * 9 // 10]:.2f} ms "
        f"(goal < {GOAL_WARM_MS:.0f} ms) {verdict(warm_ms < GOAL_WARM_MS)}"
    )
    print(
        f"through the dashboard (scrape token, agent over HTTP, scheduler series): median {relay_ms:.2f} ms (information)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
