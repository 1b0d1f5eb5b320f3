"""/fleet with 20 servers: p99 < 100 ms under 16 signed-in clients (issue 24 §6).

The dashboard runs as a real process with ``fleet.listen`` (its own hub); 20 servers join through the
real commands (``fm-dashboard fleet token create``, ``fm-agent fleet join``) and keep their links with
20 real ``fm-agent uplink`` processes.  To fit two cores, the 20 servers share one real agent (a test
world's, on its Unix socket): its ``fleet.json`` holds the 20 servers' token hashes, so each server's
requests are checked with its own token as on separate machines.  The dashboard's own server is that
agent too (21 rows).  16 clients then read the full /fleet page for 10 s.

Run from the repo root with the venv python:  .venv/bin/python tests/benchmarks/bench_fleet_page.py
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "doubles"), str(ROOT / "tests" / "benchmarks")]

from bench_dashboard import login, wait_http  # noqa: E402
from measure import verdict  # noqa: E402
from support.config_factory import write_config  # noqa: E402
from support.fleet_world import ServerWorld, run  # noqa: E402
from support.ports import free_port  # noqa: E402

SERVERS = 20
CLIENTS = 16
DURATION = 10.0
GOAL_P99_MS = 100.0


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-fleet-page-") as tmp:
        root = Path(tmp)
        world = ServerWorld(root / "agent", "hq")
        world.start_agent()
        hub_port = free_port()
        dash_root = root / "dash"
        dash_root.mkdir()
        config = write_config(
            dash_root,
            agent={"socket": world.socket_path},
            dashboard={"threads": 24, "port": free_port()},  # a fixed port: the bench asks for it below
            fleet={
                "listen": f"127.0.0.1:{hub_port}",
                "address": f"127.0.0.1:{hub_port}",
                "dir": str(dash_root / "fleet"),
                "local_name": "hq",
            },
        )
        procs: list[subprocess.Popen] = []
        try:
            done = run("fmappliance.dashboard", ["--config", str(config), "fleet", "init"])
            assert done.returncode == 0, done.stderr
            port = __import__("yaml").safe_load(config.read_text())["dashboard"]["port"]
            dash_log = open(root / "dashboard.log", "ab")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fmappliance.dashboard", "--config", str(config)],
                    stdout=dash_log,
                    stderr=subprocess.STDOUT,
                )
            )
            wait_http(port, "/healthz")
            tokens_hashes = []
            fleet_dirs = []
            for i in range(SERVERS):
                name = f"erp-{i:02d}"
                token = run(
                    "fmappliance.dashboard", ["--config", str(config), "fleet", "token", "create", "--name", name]
                )
                assert token.returncode == 0, token.stderr
                server_root = root / name
                server_root.mkdir()
                server_config = write_config(
                    server_root, agent={"socket": world.socket_path}, fleet={"dir": str(server_root / "fleet")}
                )
                joined = run(
                    "fmappliance.agent",
                    [
                        "--config",
                        str(server_config),
                        "fleet",
                        "join",
                        f"127.0.0.1:{hub_port}",
                        "--name",
                        name,
                        "--wait",
                        "0",
                    ],
                    env={"FM_JOIN_TOKEN": token.stdout.splitlines()[0]},
                )
                assert joined.returncode == 0, joined.stderr + joined.stdout
                state = json.loads((server_root / "state" / "agent" / "fleet.json").read_text())
                tokens_hashes += state["tokens"]
                fleet_dirs.append(server_root / "fleet")
            # The one agent accepts every server's token (see the docstring).
            (world.state_dir / "fleet.json").write_text(json.dumps({"server": "erp-00", "tokens": tokens_hashes}))
            for fleet_dir in fleet_dirs:
                log = open(fleet_dir.parent / "uplink.log", "ab")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "fmappliance.agent", "uplink", "--dir", str(fleet_dir)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            conn, cookie = login(port)
            headers = {"Cookie": f"fmsession={cookie}", "Accept": "application/json"}
            deadline = time.monotonic() + 90
            rows: list = []
            while time.monotonic() < deadline:
                conn.request("GET", "/fleet", headers=headers)
                response = conn.getresponse()
                rows = json.loads(response.read()).get("servers", []) if response.status == 200 else []
                online = [r for r in rows if r["state"] == "online" and r["stacks_total"] is not None]
                if len(online) == SERVERS + 1:
                    break
                time.sleep(1)
            states = sorted({r["state"] for r in rows})
            print(f"{len(rows)} rows on /fleet, states {states}")
            if len(rows) != SERVERS + 1 or states != ["online"]:
                print(f"servers did not all come online: {verdict(False)}")
                return 0
            p99, count, errors = load(port)
            print(
                f"/fleet ({SERVERS} servers + the dashboard's own) under {CLIENTS} clients: {count} pages in "
                f"{DURATION:.0f} s, p99 {p99:.1f} ms, {errors} errors (goal p99 < {GOAL_P99_MS:.0f} ms): "
                f"{verdict(p99 < GOAL_P99_MS and errors == 0)}"
            )
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            world.stop()
    return 0


def load(port: int) -> tuple[float, int, int]:
    sessions = [login(port) for _ in range(CLIENTS)]
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0]
    start = threading.Event()
    stop_at = [0.0]

    def client(i: int) -> None:
        conn, cookie = sessions[i]
        headers = {"Cookie": f"fmsession={cookie}"}
        start.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            conn.request("GET", "/fleet", headers=headers)
            response = conn.getresponse()
            body = response.read()
            latencies[i].append(time.perf_counter() - t0)
            if response.status != 200 or b"erp-19" not in body:
                errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + DURATION
    start.set()
    for thread in threads:
        thread.join()
    values = sorted(v for mine in latencies for v in mine)
    p99 = values[int(len(values) * 0.99) - 1] * 1000 if values else float("inf")
    return p99, len(values), errors[0]


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
