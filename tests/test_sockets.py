"""Both services as real processes on Unix sockets (the default for new installs), and on TCP
with connection limits that a crowd of idle connections cannot exhaust."""

from __future__ import annotations

import grp
import http.client
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from support.config_factory import TEST_USER, write_config
from support.polling import wait_for

from fmappliance.config import load_config
from fmappliance.dashboard.agent_client import AgentClient, UnixHTTPConnection

ROOT = Path(__file__).resolve().parents[1]
IDLE_CONNECTIONS = 150  # above waitress's default connection_limit of 100


def socket_group() -> str:
    """A group other than our primary one when we may chown to it (root), to see the chgrp happen."""
    if os.geteuid() == 0:
        for name in ("daemon", "nogroup", "adm"):
            try:
                grp.getgrnam(name)
                return name
            except KeyError:
                pass
    return grp.getgrgid(os.getgid()).gr_name


def start(module: str, config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(config)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "ab"),
        start_new_session=True,
    )


def answers(connect, path: str = "/healthz"):
    def probe():
        conn = connect()
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    return probe


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def test_agent_and_dashboard_on_sockets_open_only_to_their_group_and_nginx_is_the_trusted_proxy(tmp_path, procs):
    group = socket_group()
    agent_sock, dash_sock = tmp_path / "agent.sock", tmp_path / "dashboard.sock"
    config = write_config(
        tmp_path,
        agent={"socket": str(agent_sock), "socket_group": group},
        dashboard={"socket": str(dash_sock), "socket_group": group, "agent_url": "http://127.0.0.1:1"},
    )
    loaded = load_config(config)
    procs.append(start("fmappliance.agent", config, tmp_path / "agent.log"))
    procs.append(start("fmappliance.dashboard", config, tmp_path / "dashboard.log"))
    wait_for(answers(lambda: UnixHTTPConnection(str(agent_sock), 2), "/"), 20, "the agent on its socket")
    wait_for(answers(lambda: UnixHTTPConnection(str(dash_sock), 2)), 20, "the dashboard on its socket")
    for path in (agent_sock, dash_sock):
        st = path.stat()
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
        assert st.st_gid == grp.getgrnam(group).gr_gid
    # Nothing listens on TCP: the configured ports stay closed.
    for port in (loaded["agent"]["port"], loaded["dashboard"]["port"]):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    # The dashboard reaches the agent on the agent's socket (not on agent_url, which is dead).
    client = AgentClient.from_config(loaded)
    assert client.stacks()["stacks"] == []

    # On the socket the peer is nginx: its X-Forwarded-For/-Proto are believed.
    conn = UnixHTTPConnection(str(dash_sock), 10)
    headers = {"X-Forwarded-For": "198.51.100.23", "X-Forwarded-Proto": "https"}
    conn.request("GET", "/login", headers=headers)
    response = conn.getresponse()
    page = response.read().decode()
    set_cookie = response.getheader("Set-Cookie")
    assert "Secure" in set_cookie
    nonce = re.search(r"fmlogin=([^;]+)", set_cookie).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": TEST_USER, "password": "wrong", "csrf_token": token})
    conn.request(
        "POST",
        "/login",
        body=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"fmlogin={nonce}"},
    )
    assert conn.getresponse().status == 401
    db = sqlite3.connect(f"{loaded['dashboard']['state_dir']}/dashboard.sqlite3")
    assert db.execute("SELECT address FROM audit ORDER BY id DESC LIMIT 1").fetchone()[0] == "198.51.100.23"
    log = (tmp_path / "agent.log").read_text()
    assert f"listening on unix:{agent_sock}" in log


@pytest.mark.parametrize(
    "module,section,path", [("fmappliance.agent", "agent", "/"), ("fmappliance.dashboard", "dashboard", "/healthz")]
)
def test_a_crowd_of_idle_connections_does_not_stop_a_service_answering(tmp_path, procs, module, section, path):
    config = write_config(tmp_path)  # port 0: the service names the port it got in its log
    log = tmp_path / "service.log"
    procs.append(start(module, config, log))
    wait_for(lambda: re.search(r"listening on (?:http://)?127\.0\.0\.1:(\d+)", log.read_text()), 20, f"{module}'s port")
    port = int(re.search(r"listening on (?:http://)?127\.0\.0\.1:(\d+)", log.read_text()).group(1))
    wait_for(answers(lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=2), path), 20, f"{module} on TCP")
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(IDLE_CONNECTIONS)]
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for sock in idle:
            sock.close()
