"""Issue 20, item 5: without systemd a supervisor restarts a crashed service with back-off and
rotates its log (``fm-agent.pyz installer supervise``, run here from the sources)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support.polling import wait_for

ROOT = Path(__file__).resolve().parents[2]
# A service that talks a lot on its first run (the log rotates), then idles until it is killed; a restarted one
# only says so, so the supervisor's note about the restart is not rotated away before the test reads it.
SERVICE = (
    "import os,sys,time\nmarker=sys.argv[1]\n"
    "if os.path.exists(marker): print('second run', flush=True)\n"
    "else:\n    open(marker, 'w').close()\n"
    "    for i in range(300): print(f'line {i:04d} ' + 'x' * 60, flush=True)\n"
    "while True: time.sleep(1)\n"
)


def start(tmp_path: Path, *command: str, max_bytes: int = 4096) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "fmappliance.installer", "supervise", "--name", "svc",
            "--log", str(tmp_path / "svc.log"), "--max-bytes", str(max_bytes), "--keep", "5",
            "--child-pidfile", str(tmp_path / "svc.child.pid"), "--", *command,
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )  # fmt: skip


def log_text(tmp_path: Path) -> str:
    try:
        return (tmp_path / "svc.log").read_text()
    except FileNotFoundError:
        return ""


def rotated_text(tmp_path: Path) -> str:
    try:
        return (tmp_path / "svc.log.1").read_text()
    except FileNotFoundError:
        return ""


def child_pid(tmp_path: Path) -> int | None:
    try:
        pid = int((tmp_path / "svc.child.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def test_a_killed_service_comes_back_and_its_log_rotates(tmp_path):
    supervisor = start(tmp_path, sys.executable, "-c", SERVICE, str(tmp_path / "ran-once"))
    try:
        first = wait_for(lambda: child_pid(tmp_path), 20, "the service to start")
        # Rotated by size: svc.log.1 … svc.log.5 at most, none much above the limit.
        wait_for(lambda: "line 0299" in log_text(tmp_path) + rotated_text(tmp_path), 20, "the first run's lines")
        wait_for(lambda: (tmp_path / "svc.log.5").exists(), 20, "five rotations")
        rotated = sorted(p.name for p in tmp_path.glob("svc.log*"))
        assert rotated == ["svc.log", "svc.log.1", "svc.log.2", "svc.log.3", "svc.log.4", "svc.log.5"]
        assert all(p.stat().st_size <= 4096 for p in tmp_path.glob("svc.log*"))
        os.kill(first, signal.SIGKILL)
        second = wait_for(lambda: (child_pid(tmp_path) or first) != first and child_pid(tmp_path), 20, "a restart")
        assert second != first
        wait_for(lambda: "second run" in log_text(tmp_path), 20, "the restarted service's line")
        assert "svc ended (killed by SIGKILL); starting it again in 1 s" in log_text(tmp_path)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(20) == 0
    assert child_pid(tmp_path) is None and not Path(f"/proc/{second}").exists()
    assert "stopped svc" in (tmp_path / "svc.log").read_text()


def test_quick_crashes_back_off_and_a_config_error_is_not_restarted(tmp_path):
    crashing = start(tmp_path, sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(1)")
    try:
        wait_for(lambda: "starting it again in 4 s" in log_text(tmp_path), 30, "the back-off")
        text = (tmp_path / "svc.log").read_text()
        assert text.index("again in 1 s") < text.index("again in 2 s") < text.index("again in 4 s")
    finally:
        crashing.send_signal(signal.SIGTERM)
        assert crashing.wait(20) == 0
    config_error = start(tmp_path, sys.executable, "-c", "import sys; sys.exit(2)")
    started = time.monotonic()
    assert config_error.wait(20) == 2 and time.monotonic() - started < 15
    assert "exited with status 2 (a config error" in (tmp_path / "svc.log").read_text()
