"""Daemon mode (no systemd): install.sh --agent-only --join runs the uplink under the installer's
supervisor (``fm-agent.pyz installer supervise … -- fm-agent.pyz uplink --dir D``), as it does the
agent.  Here the same two commands from the sources: a killed uplink is started again and the hub
sees the server online again; a server that never joined (no uplink files, exit 2) is not restarted
in a loop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.fleet_world import FleetHub, ServerWorld, wait_online
from support.polling import wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def supervise(tmp_path: Path, fleet_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "fmappliance.agent", "installer", "supervise", "--name", "fm-uplink",
            "--log", str(tmp_path / "fm-uplink.log"), "--child-pidfile", str(tmp_path / "fm-uplink.child.pid"),
            "--", sys.executable, "-m", "fmappliance.agent", "uplink", "--dir", str(fleet_dir),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip


def child_pid(tmp_path: Path) -> int | None:
    try:
        pid = int((tmp_path / "fm-uplink.child.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_killed_supervised_uplink_comes_back_and_the_server_is_online_again(tmp_path):
    hub = FleetHub(tmp_path / "hub")
    hub.init()
    hub.start()
    world = ServerWorld(tmp_path / "erp-b", "erp-b")
    supervisor = None
    try:
        assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        world.start_agent()
        supervisor = supervise(tmp_path, world.fleet_dir)
        wait_online(hub.hub, "erp-b")
        first = wait_for(lambda: child_pid(tmp_path), 20, "the uplink to start")
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] == 0, 10, "the hub to see the links gone")
        second = wait_for(lambda: (child_pid(tmp_path) or first) != first and child_pid(tmp_path), 20, "a restart")
        assert second != first
        wait_online(hub.hub, "erp-b")
        assert hub.client("erp-b").stacks()  # requests pass through the restarted uplink
        log = (tmp_path / "fm-uplink.log").read_text()
        assert "fm-uplink ended (killed by SIGKILL); starting it again in 1 s" in log
    finally:
        if supervisor is not None:
            stop(supervisor)
        world.stop()
        hub.stop()
    assert child_pid(tmp_path) is None, "stopping the supervisor stops the uplink"


def test_an_uplink_that_has_not_joined_stops_its_supervisor(tmp_path):
    supervisor = supervise(tmp_path, tmp_path / "no-fleet")
    try:
        assert supervisor.wait(30) == 2
    finally:
        stop(supervisor)
    log = (tmp_path / "fm-uplink.log").read_text()
    assert "has not joined a fleet (fm-agent fleet join)" in log
    assert log.count("uplink.json is missing") == 1
