"""Fleet tests on one machine: a hub, N server worlds side by side, the real commands and processes.

``FleetHub(root)``                   a dashboard config with ``fleet.listen`` on a free port; ``init()`` runs
                                     ``fm-dashboard fleet init``; ``token(name)`` runs ``fleet token create``;
                                     ``start()`` runs the hub in this process over the same state database
                                     (as the serving dashboard does), so tests can send requests through it
``ServerWorld(root, name)``          a test world (doubles, stacks) whose agent listens on a Unix socket;
                                     ``join(hub, token)``, ``start_agent()``, ``start_uplink()``
``listening_tcp_inodes()`` / ``socket_inodes(pid)``   the "no listening port" check
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from fmappliance.config import load_config
from support.config_factory import write_config
from support.polling import wait_for
from support.ports import free_port
from support.units import service_env
from support.world import AgentProcess, build_world

SCRAPE_TOKEN = "scrape-token-0123456789abcdef0123456789abcdef"


def run(module: str, args: list[str], env: dict | None = None, stdin: str | None = None, timeout: float = 60):
    full_env = {k: v for k, v in os.environ.items() if k != "FM_JOIN_TOKEN"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


class FleetHub:
    def __init__(self, root: Path, **fleet):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token_file = root / "metrics.token"
        token_file.write_text(SCRAPE_TOKEN)
        token_file.chmod(0o600)
        self.config_path = write_config(
            root,
            fleet={"listen": self.address, "address": self.address, "dir": str(root / "fleet"), **fleet},
            # a fixed port: tests/fleet/test_hub_doors.py probes the (socket-activated) dashboard on it
            dashboard={"metrics_token_file": str(token_file), "port": free_port()},
        )
        self.config = load_config(self.config_path)
        self.hub = None
        self.registry = None

    def cli(self, *args: str, stdin: str | None = None):
        return run("fmappliance.dashboard", ["--config", str(self.config_path), "fleet", *args], stdin=stdin)

    def init(self) -> str:
        done = self.cli("init")
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def token(self, name: str | None = None, ttl: int | None = None) -> str:
        args = ["token", "create"] + (["--name", name] if name else []) + (["--ttl", str(ttl)] if ttl else [])
        done = self.cli(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[0]

    def start(self):
        from fmappliance.dashboard.fleet_client import start_hub
        from fmappliance.dashboard.state_db import StateDB

        self.hub, self.registry = start_hub(self.config, StateDB(self.config["dashboard"]["state_dir"]))
        return self.hub

    def client(self, name: str, timeout: float = 10):
        from fmappliance.dashboard.fleet_client import FleetClient

        return FleetClient(self.hub, self.registry, name, timeout, cache_seconds=0)

    def stop(self) -> None:
        if self.hub is not None:
            self.hub.stop()


class SocketAgentProcess(AgentProcess):
    """The real agent on a Unix socket (as installed), ready when ``GET /`` answers there."""

    def __init__(self, config_path: Path, socket_path: str, log_path: Path):
        super().__init__(config_path, 0, log_path)
        self.socket_path = socket_path

    def _learn_port(self) -> bool:
        return True

    def is_ready(self) -> bool:
        from fmappliance.dashboard.agent_client import UnixHTTPConnection

        conn = UnixHTTPConnection(self.socket_path, 1)
        try:
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        finally:
            conn.close()


class ServerWorld:
    def __init__(self, root: Path, name: str, **security):
        self.name = name
        self.world = build_world(root)
        self.socket_path = str(root / "agent.sock")
        self.fleet_dir = root / "fleet"
        self.world.write_config(
            agent={"socket": self.socket_path},
            fleet={"dir": str(self.fleet_dir)},
            **({"security": security} if security else {}),
        )
        self.config_path = self.world.config_path
        self.state_dir = Path(self.world.config["agent"]["state_dir"])
        self.agent: SocketAgentProcess | None = None
        self.uplink: subprocess.Popen | None = None
        self.uplink_log = root / "uplink.log"

    def join(self, hub_address: str, token: str, *extra: str, env_token: bool = True, wait: str = "0"):
        """``fm-agent fleet join``; ``--wait 0`` unless ``wait`` is given (most tests start the uplink later)."""
        env = {"FM_JOIN_TOKEN": token} if env_token else {}
        args = ["--config", str(self.config_path), "fleet", "join", hub_address, *extra, "--wait", wait]
        return run("fmappliance.agent", args, env=env)

    def join_waiting(self, hub_address: str, token: str, *extra: str, wait: float = 30) -> subprocess.Popen:
        """``fm-agent fleet join`` left running: it prints how to start the uplink, then waits for the hub."""
        env = {k: v for k, v in os.environ.items() if k != "FM_JOIN_TOKEN"}
        env["FM_JOIN_TOKEN"] = token
        args = ["--config", str(self.config_path), "fleet", "join", hub_address, *extra, "--wait", str(wait)]
        return subprocess.Popen(
            [sys.executable, "-m", "fmappliance.agent", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def fleet(self, *args: str, stdin: str | None = None):
        return run("fmappliance.agent", ["--config", str(self.config_path), "fleet", *args], stdin=stdin)

    def start_agent(self) -> SocketAgentProcess:
        self.agent = SocketAgentProcess(self.config_path, self.socket_path, self.world.root / "agent.log").start()
        return self.agent

    def start_uplink(self) -> subprocess.Popen:
        log = open(self.uplink_log, "ab")
        self.uplink = subprocess.Popen(
            [sys.executable, "-m", "fmappliance.agent", "uplink", "--dir", str(self.fleet_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=service_env("fm-uplink"),
        )
        log.close()
        return self.uplink

    def uplink_output(self) -> str:
        try:
            return self.uplink_log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.uplink is not None and self.uplink.poll() is None:
            self.uplink.send_signal(signal.SIGTERM)
            try:
                self.uplink.wait(5)
            except subprocess.TimeoutExpired:
                self.uplink.kill()
                self.uplink.wait()
        if self.agent is not None:
            self.agent.ensure_stopped()


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def wait_online(hub, name: str, timeout: float = 20) -> dict:
    return wait_for(
        lambda: (s := hub.state(name))["state"] == "online" and s["idle_connections"] >= 1 and s,
        timeout,
        f"{name} to be online",
    )


@contextmanager
def joined_fleet(tmp_path: Path, names: tuple[str, ...], **hub_options):
    """A running hub and one server world per name, each joined through the real command, its agent and
    uplink started and online; everything is stopped afterwards."""
    hub = FleetHub(tmp_path / "hub", **hub_options)
    hub.init()
    hub.start()
    worlds = [ServerWorld(tmp_path / name, name) for name in names]
    try:
        for world in worlds:
            joined = world.join(hub.address, hub.token(world.name), "--name", world.name)
            assert joined.returncode == 0, joined.stderr
            world.start_agent()
            world.start_uplink()
        for world in worlds:
            wait_online(hub.hub, world.name)
        yield hub, worlds
    finally:
        for world in worlds:
            world.stop()
        hub.stop()


def fill_handshakes(port: int, first_source: int) -> list[socket.socket]:
    """Silent connections from 127.0.0.<first_source>… up to the hub's limits (MAX_PER_SOURCE from each of
    enough addresses to reach MAX_HANDSHAKES), then checks that one more, from another address, is closed at
    once.  Returns the held connections (the caller closes them)."""
    from fmappliance.dashboard import hub as hub_module

    held: list[socket.socket] = []
    for i in range(hub_module.MAX_HANDSHAKES // hub_module.MAX_PER_SOURCE):
        held += [
            socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(f"127.0.0.{first_source + i}", 0))
            for _ in range(hub_module.MAX_PER_SOURCE)
        ]
    time.sleep(0.3)
    more = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.99", 0))
    more.settimeout(1)
    assert more.recv(10) == b"", "past the limits a connection is closed at once"
    more.close()
    return held
