"""Issue 21, item 12: every member of the dashboard socket's group (all of nginx's user's processes)
can open the socket; X-Forwarded-For/-Proto count only when nginx's secret header comes with them."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from support.config_factory import TEST_USER, write_config
from support.polling import wait_for
from test_sockets import answers, procs, socket_group, start  # noqa: F401 (procs is a fixture)

from fmappliance.config import load_config
from fmappliance.dashboard.agent_client import UnixHTTPConnection

SECRET = "s3cret-" + "x" * 40
FORGED = "198.51.100.23"


def failed_login_address(sock: Path, db: Path, extra: dict) -> tuple[str, str]:
    """(the address the audit log recorded for a wrong password, the Set-Cookie of /login)."""
    conn = UnixHTTPConnection(str(sock), 10)
    headers = {"X-Forwarded-For": FORGED, "X-Forwarded-Proto": "https", **extra}
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
    conn.getresponse().read()
    conn.close()
    address = sqlite3.connect(db).execute("SELECT address FROM audit ORDER BY id DESC LIMIT 1").fetchone()[0]
    return address, set_cookie


def test_forwarding_headers_count_only_with_nginxs_secret(tmp_path, procs):  # noqa: F811
    secret_file = tmp_path / "proxy-secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    sock = tmp_path / "dashboard.sock"
    config = write_config(
        tmp_path,
        dashboard={
            "socket": str(sock),
            "socket_group": socket_group(),
            "agent_url": "http://127.0.0.1:1",
            "proxy_secret_file": str(secret_file),
        },
    )
    db = Path(load_config(config)["dashboard"]["state_dir"]) / "dashboard.sqlite3"
    procs.append(start("fmappliance.dashboard", config, tmp_path / "dashboard.log"))
    wait_for(answers(lambda: UnixHTTPConnection(str(sock), 2)), 20, "the dashboard on its socket")

    # Another process of the socket's group, without the secret (or with a wrong one): not believed.
    for extra in ({}, {"X-Fmappliance-Proxy": "guess"}, {"X-Fmappliance-Proxy": SECRET[:-1]}):
        address, cookie = failed_login_address(sock, db, extra)
        assert address != FORGED and "Secure" not in cookie, extra
    # nginx (the secret from its root-only include): believed.
    address, cookie = failed_login_address(sock, db, {"X-Fmappliance-Proxy": SECRET})
    assert address == FORGED and "Secure" in cookie


def test_an_unreadable_proxy_secret_file_is_one_line_and_exit_2(tmp_path):
    config = write_config(tmp_path, dashboard={"proxy_secret_file": str(tmp_path / "missing")})
    proc = subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"fm-dashboard: dashboard.proxy_secret_file: cannot read {tmp_path / 'missing'}: No such file or directory"
    )
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["short"])
def test_a_short_proxy_secret_is_refused(tmp_path, text):
    secret = tmp_path / "proxy-secret"
    secret.write_text(text)
    config = write_config(tmp_path, dashboard={"proxy_secret_file": str(secret)})
    proc = subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "fewer than 32 characters" in proc.stderr
