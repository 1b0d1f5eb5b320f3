"""Dashboard benchmark: /dashboard throughput and p99 with 16 signed-in clients, dashboard RSS,
and a 2 GiB download through the dashboard against the same download straight from the agent.

Run from the repo root with the venv python:  .venv/bin/python tests/benchmarks/bench_dashboard.py
The dashboard runs as a real process (python -m fmappliance.dashboard) in front of a fake agent
process (tests/dashboard/fake_agent.py) holding 30 stacks x 5 sites.  Always exits 0.
"""

from __future__ import annotations

import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "dashboard")]

from measure import rss_mb, verdict  # noqa: E402
from support.config_factory import TEST_PASSWORD, TEST_USER, write_config  # noqa: E402
from support.ports import free_port  # noqa: E402

CLIENTS = 16
DURATION = 10.0
BIG = 2 * 1024**3
BIG_PATH = "2026-11-25_02-00-03.files.tar"
GOALS = {"rps": 500, "p99_ms": 100, "rss_mb": 45, "ratio": 0.5}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(port: int, path: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answers on port {port}")


def login(port: int) -> tuple[http.client.HTTPConnection, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    response = conn.getresponse()
    page = response.read().decode()
    login_cookie = re.search(r"fmlogin=([^;]+)", response.getheader("Set-Cookie")).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": TEST_USER, "password": TEST_PASSWORD, "csrf_token": token})
    conn.request(
        "POST",
        "/login",
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"fmlogin={login_cookie}",
            "Origin": f"http://127.0.0.1:{port}",
            "Host": f"127.0.0.1:{port}",
        },
    )
    response = conn.getresponse()
    response.read()
    cookie = re.search(r"fmsession=([^;]+)", response.getheader("Set-Cookie")).group(1)
    return conn, cookie


def load_test(port: int) -> tuple[float, float, int, int]:
    sessions = [login(port) for _ in range(CLIENTS)]
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors = [0]
    start = threading.Event()
    stop_at = [0.0]

    def client(i: int) -> None:
        conn, cookie = sessions[i]
        headers = {"Cookie": f"fmsession={cookie}"}
        mine = latencies[i]
        start.wait()
        while time.monotonic() < stop_at[0]:
            t0 = time.perf_counter()
            conn.request("GET", "/dashboard", headers=headers)
            response = conn.getresponse()
            body = response.read()
            mine.append(time.perf_counter() - t0)
            if response.status != 200 or b'data-stack="stack29"' not in body:
                errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    began = time.monotonic()
    stop_at[0] = began + DURATION
    start.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    allv = sorted(v for lst in latencies for v in lst)
    p99 = allv[int(len(allv) * 0.99) - 1] if allv else float("inf")
    return len(allv) / elapsed, p99 * 1000, len(allv), errors[0]


def timed_download(port: int, path: str, headers: dict, pid_to_watch: int | None) -> tuple[float, float, float, int]:
    """Bytes/s of a full download; RSS of the watched process at start and at most during it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    assert response.status == 200, (response.status, response.read(300))
    buf = bytearray(1024 * 1024)
    view = memoryview(buf)
    total = 0
    rss_start = rss_max = rss_mb(pid_to_watch) if pid_to_watch else 0.0
    next_sample = time.monotonic()
    t0 = time.perf_counter()
    while True:
        n = response.readinto(view)
        if not n:
            break
        total += n
        if pid_to_watch and time.monotonic() >= next_sample:
            rss_max = max(rss_max, rss_mb(pid_to_watch))
            next_sample = time.monotonic() + 0.2
    took = time.perf_counter() - t0
    conn.close()
    return total / took, rss_start, rss_max, total


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    agent_port, dash_port = free_port(), free_port()
    from fake_agent import TOKEN

    config = write_config(
        tmp,
        security={"token": TOKEN},
        dashboard={
            "agent_url": f"http://127.0.0.1:{agent_port}",
            "port": dash_port,
            "threads": 32,
            "trusted_proxy": "",
        },
    )
    env = {**os.environ, "FMAPPLIANCE_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    agent = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "tests" / "dashboard" / "fake_agent.py"),
            "--port",
            str(agent_port),
            "--stacks",
            "30",
            "--sites",
            "5",
            "--big-file",
            str(BIG),
        ],
        env=env,
    )
    dashboard = subprocess.Popen([sys.executable, "-m", "fmappliance.dashboard", "--config", str(config)], env=env)
    try:
        wait_http(agent_port, "/")
        wait_http(dash_port, "/healthz")
        print(
            f"dashboard pid {dashboard.pid} on :{dash_port}, fake agent (30 stacks x 5 sites) on :{agent_port}; load average {os.getloadavg()[0]:.1f}"
        )

        cpu_before = cpu_seconds(dashboard.pid)
        rps, p99, count, errors = load_test(dash_port)
        cpu_per_request = (cpu_seconds(dashboard.pid) - cpu_before) / max(count, 1) * 1000
        rss_after_load = rss_mb(dashboard.pid)
        print(
            f"/dashboard, {CLIENTS} clients, {DURATION:.0f} s: {rps:.0f} req/s ({count} requests, {errors} bad)   goal >= {GOALS['rps']}: {verdict(rps >= GOALS['rps'] and not errors)}"
        )
        print(f"(dashboard CPU per request: {cpu_per_request:.2f} ms; the clients share this machine's 2 cores)")
        print(f"/dashboard p99 latency: {p99:.1f} ms   goal < {GOALS['p99_ms']} ms: {verdict(p99 < GOALS['p99_ms'])}")
        print(
            f"dashboard RSS after the load test: {rss_after_load:.1f} MB   goal < {GOALS['rss_mb']} MB: {verdict(rss_after_load < GOALS['rss_mb'])}"
        )

        _, cookie = login(dash_port)
        site = "site0.stack00.example.com"
        direct, _, _, direct_total = timed_download(
            agent_port, f"/backups/stack00/{site}/{BIG_PATH}", {"Authorization": f"Bearer {TOKEN}"}, None
        )
        relayed, rss_before, rss_peak, relayed_total = timed_download(
            dash_port, f"/download/stack00/{site}/{BIG_PATH}", {"Cookie": f"fmsession={cookie}"}, dashboard.pid
        )
        ratio = relayed / direct
        assert direct_total == relayed_total == BIG
        print(
            f"2 GiB download: agent direct {direct / 1e6:.0f} MB/s, through the dashboard {relayed / 1e6:.0f} MB/s, ratio {ratio:.2f}x   goal >= {GOALS['ratio']}x: {verdict(ratio >= GOALS['ratio'])}"
        )
        grew = rss_peak - rss_before
        print(
            f"dashboard RSS during the download: {rss_before:.1f} MB -> peak {rss_peak:.1f} MB (+{grew:.1f} MB)   goal flat (< +10 MB) and < {GOALS['rss_mb']} MB: {verdict(grew < 10 and rss_peak < GOALS['rss_mb'])}"
        )
    finally:
        for proc in (dashboard, agent):
            proc.terminate()
        for proc in (dashboard, agent):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
