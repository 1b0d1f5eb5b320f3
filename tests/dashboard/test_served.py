"""The dashboard as a real process (python -m fmappliance.dashboard): waitress takes the client
address and scheme from the trusted proxy only, and caps request bodies."""

import http.client
import re
import sqlite3
import urllib.parse

import pytest
from support.config_factory import TEST_USER, write_config
from support.world import DashboardProcess

from fmappliance.config import load_config


def start_dashboard(tmp_path, fake_agent, **dashboard) -> DashboardProcess:
    """The dashboard as a process on a port it picks itself (port 0; it names the port in its log)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "port": 0, **dashboard})
    return DashboardProcess(config, 0, tmp_path / "dashboard.log").start(20)


@pytest.fixture
def served(tmp_path, fake_agent):
    procs = []

    def start(**dashboard):
        proc = start_dashboard(tmp_path / str(len(procs)), fake_agent, **dashboard)
        procs.append(proc)
        return proc.port, load_config(proc.config_path)["dashboard"]["state_dir"]

    yield start
    for proc in procs:
        proc.ensure_stopped()


def failed_login(port, headers):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/login", headers=headers)
    response = conn.getresponse()
    page = response.read().decode()
    set_cookie = response.getheader("Set-Cookie")
    nonce = re.search(r"fmlogin=([^;]+)", set_cookie).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"username": TEST_USER, "password": "wrong", "csrf_token": token})
    conn.request(
        "POST",
        "/login",
        body=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"fmlogin={nonce}"},
    )
    response = conn.getresponse()
    response.read()
    return set_cookie, response.status


def last_audit_address(state_dir):
    db = sqlite3.connect(f"{state_dir}/dashboard.sqlite3")
    return db.execute("SELECT address FROM audit ORDER BY id DESC LIMIT 1").fetchone()[0]


def test_behind_the_trusted_proxy_the_real_client_and_https_are_used(served):
    port, state_dir = served(trusted_proxy="127.0.0.1")
    set_cookie, status = failed_login(port, {"X-Forwarded-For": "198.51.100.23", "X-Forwarded-Proto": "https"})
    assert status == 401
    assert "Secure" in set_cookie  # secure_cookies auto: the proxy said https
    assert last_audit_address(state_dir) == "198.51.100.23"


def test_without_a_trusted_proxy_forwarded_headers_are_ignored(served):
    port, state_dir = served(trusted_proxy="")
    set_cookie, status = failed_login(port, {"X-Forwarded-For": "198.51.100.23", "X-Forwarded-Proto": "https"})
    assert status == 401
    assert "Secure" not in set_cookie
    assert last_audit_address(state_dir) == "127.0.0.1"


def test_request_bodies_over_1_mib_are_refused(served):
    port, _ = served()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    # The announced length is refused before any body is read: sending the 2 MiB as well would race the server's
    # 413 and close (a broken pipe, or a reset that swallows the answer).
    conn.putrequest("POST", "/login")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded")
    conn.putheader("Content-Length", str(2 * 1024 * 1024))
    conn.endheaders()
    assert conn.getresponse().status == 413
