"""Download benchmark: a 2 GiB backup through nginx -> dashboard (-> agent) against nginx
serving the same file directly, both over TLS from the same nginx, measured in one run.

With ``dashboard.download_mode: accel`` the dashboard checks the session, asks the agent
whether the file is a published backup (HEAD) and hands the sending to nginx with
X-Accel-Redirect (the installer's default); with ``stream`` the bytes travel agent ->
dashboard -> nginx.  Goal: the appliance path at least 0.8x the direct one.  Also printed:
the CPU time nginx's worker spends per download in each location (what the location's own
settings cost, less shaken by other processes on the machine than the speed is).

Run from the repo root with the venv python:  .venv/bin/python tests/benchmarks/bench_download_nginx.py
Uses dist/ when `make build` made it, else builds into a temp dir. Needs curl. Always exits 0.
"""

from __future__ import annotations

import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "install"), str(ROOT)]

import yaml  # noqa: E402
from install_harness import (  # noqa: E402
    SESSION_COOKIE,
    SITE,
    Appliance,
    NginxSite,
    agent_call,
    built_or_build_dist,
    free_port,
    start_appliance,
    start_zipapp,
    stop,
)
from measure import verdict  # noqa: E402

from fmappliance.agent.backups import BackupStore  # noqa: E402

BIG = 2 * 1024**3
GOAL = 0.8
ROUNDS = 4


def write_big_tar(path: Path) -> None:
    """A valid tar of exactly BIG bytes (one member), written in large blocks."""
    info = tarfile.TarInfo(f"./{SITE}/public/files/big.bin")
    info.size = BIG - 3 * 512  # header + data + the two end-of-archive blocks
    block = bytes(8 * 1024 * 1024)
    with open(path, "wb") as fh:
        fh.write(info.tobuf(format=tarfile.GNU_FORMAT))
        left = info.size
        while left:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
        fh.write(bytes(1024))


def publish_big_backup(tmp: Path, backups_dir: Path) -> str:
    """Publish it as the agent would (copy, verify, manifest); returns the tar's published name."""
    work = tmp / "big"
    work.mkdir()
    db = work / "database.sql.gz"
    with gzip.open(db, "wt") as fh:
        fh.write("-- site: bench\nCREATE TABLE t (a int);\n-- Dump completed on 2026-11-25 02:00:00\n")
    write_big_tar(work / "files.tar")
    manifest = BackupStore(str(backups_dir), {"daily": 7, "weekly": 4, "monthly": 12}).publish(
        "prod", SITE, {"database": str(db), "files": str(work / "files.tar")}
    )
    shutil.rmtree(work)
    os.sync()  # no writeback of the 4 GiB just written competing with the measurements
    return next(f["name"] for f in manifest["files"] if f["name"].endswith(".files.tar"))


def start_stream_dashboard(tmp: Path, dist: Path, app, procs: list):
    """A second dashboard (download_mode: stream) on the same agent, behind its own nginx."""
    config = yaml.safe_load(app.config.read_text())
    port = free_port()
    config["dashboard"].update(port=port, download_mode="stream", state_dir=str(tmp / "state" / "dashboard-stream"))
    path = tmp / "config-stream.yaml"
    path.write_text(yaml.safe_dump(config))
    procs.append(
        start_zipapp(
            dist / "fm-dashboard.pyz", path, port, tmp / "cache" / "fm-dashboard", tmp / "fm-dashboard-stream.log"
        )
    )
    site = NginxSite(
        app.root,
        tmp / "nginx-stream",
        free_port(),
        free_port(),
        dashboard_port=port,
        backups_dir=app.backups_dir,
        cert=app.cert,
        key=app.key,
    ).start()
    procs.append(site.proc)
    stream = Appliance(tmp, app.root, app.cert, app.key, path, app.agent_port, port, site, app.backups_dir)
    response = stream.login()
    assert response.status == 303, response.status
    stream.session = next(
        v.split(";")[0].split("=", 1)[1] for v in response.header("Set-Cookie") if v.startswith(SESSION_COOKIE + "=")
    )
    return stream


def curl_speed(url: str, port: int, cert: Path, cookie: str = "") -> float:
    """Bytes per second for one download to /dev/null (curl: the cheapest TLS client at hand)."""
    host = url.split("/")[2].split(":")[0]
    # -k: the test certificate names localhost only; verification costs the handshake alone.
    argv = [
        "curl",
        "-sS",
        "--fail",
        "-k",
        "--resolve",
        f"{host}:{port}:127.0.0.1",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{speed_download} %{time_starttransfer}",
        url,
    ]
    if cookie:
        argv[1:1] = ["-H", f"Cookie: {SESSION_COOKIE}={cookie}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
    size, speed = int(float(out[0])), float(out[1])
    print(
        f"  {url.split('/', 3)[3][:40]}: {speed / 1e6:.0f} MB/s, first byte after {float(out[2]) * 1000:.0f} ms",
        flush=True,
    )
    assert size == BIG, f"downloaded {size} bytes, expected {BIG}"
    return speed


def workers_cpu(master: int) -> float | None:
    """CPU seconds nginx's workers have used so far (None where /proc cannot tell).

    Less at the mercy of other processes than the speed: what nginx itself spends to send a
    file through one location or the other (the buffers it reads into, copies, encrypts).
    """
    try:
        workers = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        ticks = 0
        for pid in workers:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> int:
    if not shutil.which("curl"):
        print("curl is missing: cannot measure (apt-get install curl)")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-download-nginx-"))
    procs: list = []
    try:
        dist = built_or_build_dist(tmp)
        # The same nginx, listener, TLS settings and certificate (a second name on the site's
        # port, so the SNI switch happens for both), serving the backups dir directly.
        direct = f"""
    server {{
        listen @HTTPS_PORT@ ssl;
        server_name direct.localhost;
        include {tmp}/root/etc/nginx/snippets/fm-tls.conf;
        ssl_certificate {tmp}/tls/test.crt;
        ssl_certificate_key {tmp}/tls/test.key;
        root {tmp}/backups;
        disable_symlinks on;
        sendfile on;
        tcp_nopush on;
    }}"""
        app = start_appliance(tmp, dist, procs, download_mode="accel", extra_http=direct)
        name = publish_big_backup(tmp, app.backups_dir)
        listed = [
            f["name"] for b in agent_call(app.agent_port, "GET", f"/backups/prod/{SITE}")["backups"] for f in b["files"]
        ]
        assert name in listed, "the agent does not list the big backup"
        https = app.nginx.https_port
        direct_url = f"https://direct.localhost:{https}/prod/{SITE}/{name}"
        app_url = f"https://localhost:{https}/download/prod/{SITE}/{name}"
        direct_best = app_best = 0.0
        cpu: dict[str, list[float]] = {"direct": [], "app": []}
        master = app.nginx.proc.pid
        # Interleaved, alternating which goes first, best of each: both paths see the same
        # machine state (other processes, page cache, CPU clock).
        for round_no in range(ROUNDS):
            for which in ("direct", "app") if round_no % 2 == 0 else ("app", "direct"):
                before = workers_cpu(master)
                if which == "direct":
                    direct_best = max(direct_best, curl_speed(direct_url, https, app.cert))
                else:
                    app_best = max(app_best, curl_speed(app_url, https, app.cert, app.session))
                after = workers_cpu(master)
                if before is not None and after is not None:
                    cpu[which].append(after - before)
        stream = start_stream_dashboard(tmp, dist, app, procs)
        stream_url = f"https://localhost:{stream.nginx.https_port}/download/prod/{SITE}/{name}"
        stream_speed = curl_speed(stream_url, stream.nginx.https_port, app.cert, stream.session)
        ratio = app_best / direct_best
        print(f"2 GiB over TLS: nginx directly {direct_best / 1e6:.0f} MB/s")
        print(
            f"2 GiB over TLS: nginx -> dashboard (accel, agent-checked) {app_best / 1e6:.0f} MB/s, "
            f"ratio {ratio:.2f}x   goal >= {GOAL}x: {verdict(ratio >= GOAL)}"
        )
        if len(cpu["direct"]) == len(cpu["app"]) == ROUNDS:
            direct_cpu, app_cpu = statistics.median(cpu["direct"]), statistics.median(cpu["app"])
            print(
                f"nginx CPU per 2 GiB (median): directly {direct_cpu:.2f} s, accel {app_cpu:.2f} s = "
                f"{app_cpu / direct_cpu:.2f}x (for information: what nginx itself spends in each location)"
            )
        print(
            f"2 GiB over TLS: nginx -> dashboard -> agent (stream, install.sh --download-mode stream) {stream_speed / 1e6:.0f} MB/s, "
            f"ratio {stream_speed / direct_best:.2f}x (for information)"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
