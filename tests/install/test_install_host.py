"""A real `sudo ./install.sh` on this host when systemd is not PID 1 (CI containers): the
appliance is left running as plain daemons, a second run restarts nothing, and
`uninstall.sh --purge` leaves the host as it found it.

It changes the host (system users, /opt, /etc, nginx), so it only runs where that is
expected: as root, in a container without systemd, with no fmappliance installed and the
appliance's ports free.  Anywhere else it is skipped with the reason.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import time
import urllib.parse
from pathlib import Path

import pyotp
import pytest
from install_harness import INSTALL_SH, free_port, install_env, previous_installer, run_install
from support.polling import wait_for

pytestmark = pytest.mark.nginx

PREFIX = Path("/opt/fmappliance")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def why_not_here() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if Path("/proc/1/comm").read_text().strip() == "systemd":
        return "systemd is PID 1: the daemon mode is not what this host would get"
    if PREFIX.exists() or Path("/etc/fmappliance").exists():
        return "fmappliance is already installed on this host"
    if not (port_free(8000) and port_free(9100)):
        return "ports 8000/9100 are in use"
    for name in ("fm-agent", "fm-dashboard", "fm-uplink"):
        try:
            pwd.getpwnam(name)
            return f"user {name} already exists"
        except KeyError:
            pass
    return None


def host_state() -> dict:
    users = {u.pw_name for u in pwd.getpwall()}
    groups = {g.gr_name for g in grp.getgrall()}
    return {
        "users": users & {"fm-agent", "fm-dashboard", "fm-uplink"},
        "groups": groups & {"fmappliance", "fmappliance-web", "fmappliance-agent", "fm-agent", "fm-dashboard"},
        "web_user_groups": sorted(g.gr_name for g in grp.getgrall() if "www-data" in g.gr_mem),
        "sites": sorted(os.listdir("/etc/nginx/sites-enabled")) if os.path.isdir("/etc/nginx/sites-enabled") else [],
        "paths": [
            p
            for p in (
                "/opt/fmappliance",
                "/etc/fmappliance",
                "/var/lib/fmappliance",
                "/var/backups/fmappliance",
                "/var/log/fmappliance",
                "/run/fmappliance",
                "/run/fm-agent",
                "/run/fm-dashboard",
            )
            if os.path.exists(p)
        ],
    }


def purge() -> subprocess.CompletedProcess | None:
    """`uninstall.sh --purge --yes` of what the test installed (None: the install got nowhere)."""
    if not (PREFIX / "uninstall.sh").exists():
        return None
    return subprocess.run([str(PREFIX / "uninstall.sh"), "--purge", "--yes"], capture_output=True, text=True)


def assert_restored(gone: subprocess.CompletedProcess | None, before: dict) -> None:
    """The purge ran and succeeded, and the host is as it was before the install."""
    assert gone is not None and gone.returncode == 0, gone and (gone.stdout + gone.stderr)
    assert host_state() == before


def running(pid_file: str) -> bool:
    try:
        pid = int(Path(pid_file).read_text())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


@pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))
def test_install_on_a_host_without_systemd_runs_the_appliance_and_uninstall_restores_the_host(dist):
    before = host_state()
    http_port, https_port = free_port(), free_port()
    env = install_env(dist)
    try:
        # stream: no acl package to install, so the test needs no network.
        first = run_install(
            None, "--http-port", str(http_port), "--https-port", str(https_port), "--download-mode", "stream", env=env
        )
        assert first.returncode == 0, first.stdout + first.stderr
        assert "UFW cannot work here" in first.stderr
        password = re.search(r"^\s*Password:\s+(\S+)", first.stdout, re.M).group(1)
        assert password not in Path("/etc/fmappliance/config.yaml").read_text()
        assert running("/run/fmappliance/fm-agent.pid") and running("/run/fmappliance/fm-dashboard.pid")
        assert "sudo kill -- -$(cat /run/fmappliance/fm-agent.pid)" in first.stdout, "says how to stop the daemons"

        # The services run as their own users; the dashboard user is not in the docker group.
        owners = subprocess.run(["ps", "-eo", "user:20,args"], capture_output=True, text=True).stdout
        assert re.search(r"^fm-agent\s+/usr/bin/python3 /opt/fmappliance/fm-agent.pyz", owners, re.M), owners
        assert re.search(r"^fm-dashboard\s+/usr/bin/python3 /opt/fmappliance/fm-dashboard.pyz", owners, re.M), owners
        assert (
            "docker" not in subprocess.run(["id", "-nG", "fm-dashboard"], capture_output=True, text=True).stdout.split()
        )

        # Both listen on Unix sockets only their peers' groups can open, not on TCP.
        for sock, group in (
            ("/run/fm-agent/agent.sock", "fmappliance"),
            ("/run/fm-dashboard/dashboard.sock", "fmappliance-web"),
        ):
            st = os.stat(sock)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660, (sock, oct(st.st_mode))
            assert grp.getgrgid(st.st_gid).gr_name == group, sock
        assert (
            "www-data" in grp.getgrnam("fmappliance-web").gr_mem
            and "www-data" not in grp.getgrnam("fmappliance").gr_mem
        )
        assert port_free(8000) and port_free(9100)

        # nginx answers over TLS for the configured name.
        ctx = ssl.create_default_context(cafile="/etc/fmappliance/tls/selfsigned.crt")
        with socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(
                    f"GET /login HTTP/1.1\r\nHost: localhost:{https_port}\r\nConnection: close\r\n\r\n".encode()
                )
                reply = b""
                while chunk := tls.recv(65536):
                    reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b"Strict-Transport-Security: max-age=63072000" in reply

        # Supervised (issue 20, item 5): a killed dashboard comes back by itself, nginx answers again.
        assert "Supervised:" in first.stdout and "5 rotated kept" in first.stdout
        killed = int(Path("/run/fmappliance/fm-dashboard.child.pid").read_text())
        os.kill(killed, signal.SIGKILL)

        def back() -> bool:
            try:
                pid = int(Path("/run/fmappliance/fm-dashboard.child.pid").read_text())
            except (OSError, ValueError):
                return False
            return pid != killed and os.path.exists("/run/fm-dashboard/dashboard.sock") and login_page(https_port)

        wait_for(back, 30, "the dashboard to be started again")
        assert "fm-dashboard ended (killed by SIGKILL)" in Path("/var/log/fmappliance/fm-dashboard.log").read_text()

        agent_pid = Path("/run/fmappliance/fm-agent.pid").read_text()
        again = run_install(None, "--http-port", str(http_port), "--https-port", str(https_port), env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "nothing changed" in again.stdout and "not restarted" in again.stdout
        assert Path("/run/fmappliance/fm-agent.pid").read_text() == agent_pid
    finally:
        gone = purge()
    assert_restored(gone, before)
    assert port_free(8000) and port_free(9100) and port_free(https_port)


def login_page(https_port: int) -> bool:
    try:
        return tls_request(https_port, "GET", "/login", {})[0] == 200
    except (OSError, IndexError, ValueError):
        return False


def tls_request(https_port: int, method: str, path: str, cookies: dict, body: str = "") -> tuple[int, dict, str]:
    """One request through nginx; returns (status, cookies, body) and keeps the cookies up to date."""
    ctx = ssl.create_default_context(cafile="/etc/fmappliance/tls/selfsigned.crt")
    headers = [f"{method} {path} HTTP/1.1", f"Host: localhost:{https_port}", "Connection: close"]
    if cookies:
        headers.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in cookies.items()))
    if body:
        headers += [
            "Content-Type: application/x-www-form-urlencoded",
            f"Content-Length: {len(body)}",
            f"Origin: https://localhost:{https_port}",
        ]
    with socket.create_connection(("127.0.0.1", https_port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(("\r\n".join(headers) + "\r\n\r\n" + body).encode())
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
    head, _, content = reply.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    for line in lines[1:]:
        if line.lower().startswith("set-cookie:"):
            name, _, value = line.split(":", 1)[1].strip().split(";", 1)[0].partition("=")
            cookies[name] = value
    return int(lines[0].split()[1]), cookies, content.decode(errors="replace")


def sign_in(https_port: int, password: str) -> dict:
    cookies: dict = {}
    status, cookies, page = tls_request(https_port, "GET", "/login", cookies)
    assert status == 200, page[:300]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode(
        {"username": "admin", "password": password, "csrf_token": token, "next": "/dashboard"}
    )
    status, cookies, page = tls_request(https_port, "POST", "/login", cookies, form)
    assert status == 303, (status, page[:500])
    return cookies


@pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))
def test_rerunning_install_sh_upgrades_an_install_of_the_previous_installer_in_place(dist, tmp_path):
    """The previous installer's TCP install, running, becomes a socket install: same config, users, backups."""
    old_install_sh = previous_installer(tmp_path / "previous")
    if old_install_sh is None:
        pytest.skip("not a git checkout with the previous installer's commit")
    before = host_state()
    http_port, https_port = free_port(), free_port()
    env = install_env(dist)
    ports = ("--http-port", str(http_port), "--https-port", str(https_port))
    try:
        old = subprocess.run(
            ["bash", str(old_install_sh), *ports, "--download-mode", "stream"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert old.returncode == 0, old.stdout + old.stderr
        password = re.search(r"^\s*Password:\s+(\S+)", old.stdout, re.M).group(1)
        assert not port_free(8000) and not port_free(9100), "the previous install listens on TCP"
        config_before = Path("/etc/fmappliance/config.yaml").read_text()
        backup = Path("/var/backups/fmappliance/kept/site/2026-01-01_02-00-00.sql.gz")
        backup.parent.mkdir(parents=True)
        backup.write_bytes(b"dump")

        new = run_install(None, *ports, env=env)
        assert new.returncode == 0, new.stdout + new.stderr
        assert "Upgraded from an earlier version" in new.stdout and "Password:" not in new.stdout
        assert Path("/etc/fmappliance/config.yaml.pre-sockets").read_text() == config_before
        assert port_free(8000) and port_free(9100), "both moved to their sockets"
        for sock in ("/run/fm-agent/agent.sock", "/run/fm-dashboard/dashboard.sock"):
            assert stat.S_ISSOCK(os.stat(sock).st_mode), sock
        # The old password still signs in through nginx; two-factor sign-in is now required, so the
        # admin enrolls first (as the summary says); then the dashboard reaches the agent.
        cookies = sign_in(https_port, password)
        status, _, page = tls_request(https_port, "GET", "/account/2fa", cookies)
        assert status == 200, page[:500]
        secret = re.search(r'<code class="totp-key">([A-Z2-7 ]+)</code>', page).group(1).replace(" ", "")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrf_token": token, "code": pyotp.TOTP(secret).now()})
        status, cookies, page = tls_request(https_port, "POST", "/account/2fa", cookies, form)
        assert status == 200 and "recovery" in page.lower(), page[:500]
        status, _, page = tls_request(https_port, "GET", "/dashboard", cookies)
        assert status == 200 and "Agent unreachable" not in page, page[:500]
        assert backup.read_bytes() == b"dump"
    finally:
        gone = purge()
    assert_restored(gone, before)
    assert port_free(8000) and port_free(9100) and port_free(https_port)


FAKE_CERTBOT = r"""#!/bin/sh
# Test double of certbot certonly --webroot: proves the challenge is served through nginx on
# the HTTP port for the domain (what Let's Encrypt checks), then issues a self-signed "certificate".
set -eu
domain="" webroot=""
while [ $# -gt 0 ]; do
    case "$1" in -d) domain="$2"; shift ;; -w) webroot="$2"; shift ;; esac
    shift
done
mkdir -p "$webroot/.well-known/acme-challenge"
echo "token-$$" >"$webroot/.well-known/acme-challenge/t$$"
got="$(curl -sf -H "Host: $domain" "http://127.0.0.1:$FAKE_ACME_PORT/.well-known/acme-challenge/t$$")"
rm -f "$webroot/.well-known/acme-challenge/t$$"
[ "$got" = "token-$$" ] || { echo "challenge not served: $got" >&2; exit 1; }
live="/etc/letsencrypt/live/$domain"
mkdir -p "$live"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "/CN=$domain" \
    -addext "subjectAltName=DNS:$domain" -keyout "$live/privkey.pem" -out "$live/fullchain.pem" 2>/dev/null
"""


@pytest.mark.skipif(
    why_not_here() is not None or os.path.exists("/etc/letsencrypt/live/localhost"),
    reason=str(why_not_here() or "/etc/letsencrypt/live/localhost exists"),
)
def test_domain_and_email_get_a_certificate_through_the_acme_webroot(dist, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "certbot").write_text(FAKE_CERTBOT)
    (bin_dir / "certbot").chmod(0o755)
    http_port, https_port = free_port(), free_port()
    env = install_env(dist, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_ACME_PORT=str(http_port))
    try:
        proc = run_install(
            None,
            "--domain",
            "localhost",
            "--email",
            "ops@example.com",
            "--download-mode",
            "stream",
            "--http-port",
            str(http_port),
            "--https-port",
            str(https_port),
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        site = Path("/etc/nginx/sites-available/fm-dashboard.conf").read_text()
        assert "ssl_certificate /etc/letsencrypt/live/localhost/fullchain.pem;" in site
        assert "Let's Encrypt certificate for localhost" in proc.stdout
        # Verifying against the new certificate proves nginx serves it (after its reload,
        # which nginx completes asynchronously).
        ctx = ssl.create_default_context(cafile="/etc/letsencrypt/live/localhost/fullchain.pem")
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", https_port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                        assert tls.version() in ("TLSv1.2", "TLSv1.3")
                break
            except ssl.SSLCertVerificationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        purge()
        subprocess.run(["rm", "-rf", "/etc/letsencrypt/live/localhost"])
        if os.path.isdir("/etc/letsencrypt") and not os.listdir("/etc/letsencrypt/live"):
            subprocess.run(["rm", "-rf", "/etc/letsencrypt"])


def copy_of_installer(dest: Path) -> Path:
    """install.sh and packaging/ of this checkout at dest (to run with an edited template)."""
    dest.mkdir(parents=True)
    shutil.copy2(INSTALL_SH, dest / "install.sh")
    shutil.copytree(INSTALL_SH.parent / "packaging", dest / "packaging")
    return dest / "install.sh"


@pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))
def test_a_site_nginx_refuses_on_reload_stops_the_installer_and_the_previous_one_keeps_serving(dist, tmp_path):
    """A new site that passes `nginx -t` but that the running nginx refuses (a limit_req zone given
    another key: `nginx -s reload` exits 0, nginx logs [emerg] and keeps its old configuration):
    the installer says so, exits non-zero and puts the previous site back, which nginx still serves."""
    before = host_state()
    http_port, https_port = free_port(), free_port()
    env = install_env(dist)
    ports = ("--http-port", str(http_port), "--https-port", str(https_port), "--download-mode", "stream")
    site_file = Path("/etc/nginx/sites-available/fm-dashboard.conf")
    try:
        first = run_install(None, *ports, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        previous = site_file.read_text()
        edited = copy_of_installer(tmp_path / "next")
        template = edited.parent / "packaging/nginx/fm-dashboard.conf"
        zone = "limit_req_zone $fm_client zone=fm_requests"
        assert zone in template.read_text()
        template.write_text(template.read_text().replace(zone, "limit_req_zone $binary_remote_addr zone=fm_requests"))
        refused = subprocess.run(["bash", str(edited), *ports], env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "nginx refused the new configuration and keeps serving the previous one" in refused.stderr
        assert 'limit_req "fm_requests" uses the "$binary_remote_addr" key' in refused.stderr
        assert "the previous nginx configuration is back in place and still served" in refused.stderr
        assert f"restored {site_file}" in refused.stdout
        assert site_file.read_text() == previous
        assert subprocess.run(["nginx", "-t", "-q"], capture_output=True).returncode == 0
        assert login_page(https_port), "nginx still serves the dashboard with the previous configuration"
        # Without the refused change the installer goes through (and reloads nothing it need not).
        again = run_install(None, *ports, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert site_file.read_text() == previous
    finally:
        gone = purge()
    assert_restored(gone, before)


def listening_tcp_inodes() -> set[str]:
    """The socket inodes of every listening TCP socket (IPv4 and IPv6) of this network namespace."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def socket_inodes_of_user(user: str) -> dict[int, set[str]]:
    """{pid: socket inodes it holds} for every process of ``user``."""
    uid = pwd.getpwnam(user).pw_uid
    found: dict[int, set[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        found[int(entry.name)] = {link[8:-1] for link in links if link.startswith("socket:[")}
    return found


@pytest.mark.skipif(why_not_here() is not None, reason=str(why_not_here()))
def test_an_agent_only_install_joins_the_hub_and_serves_it_through_the_uplink_with_no_listening_port(dist, tmp_path):
    """Issue 24: `sudo FM_JOIN_TOKEN=... ./install.sh --agent-only --join HOST:PORT --name N` on a host
    without systemd: the agent and the uplink run supervised as their own users, the server shows
    online at the hub and answers through the link, no process of it listens on TCP, no dashboard or
    nginx site is installed, and uninstall --purge leaves the host as it found it."""
    from support.fleet_world import FleetHub, wait_online

    before = host_state()
    hub = FleetHub(tmp_path / "hub")
    hub.init()
    hub.start()
    try:
        env = install_env(dist, FM_JOIN_TOKEN=hub.token("erp-b"))
        proc = run_install(None, "--agent-only", "--join", hub.address, "--name", "erp-b", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"Joined the fleet of {hub.address} as erp-b." in proc.stdout
        assert running("/run/fmappliance/fm-agent.pid") and running("/run/fmappliance/fm-uplink.pid")
        assert not Path("/run/fmappliance/fm-dashboard.pid").exists() and not (PREFIX / "fm-dashboard.pyz").exists()
        assert not Path("/etc/nginx/sites-available/fm-dashboard.conf").exists()

        try:
            wait_online(hub.hub, "erp-b", timeout=30)
        except AssertionError as exc:
            logs = {name: Path(f"/var/log/fmappliance/{name}.log") for name in ("fm-uplink", "fm-agent", "supervise")}
            said = {name: log.read_text()[-2000:] if log.exists() else "(none)" for name, log in logs.items()}
            raise AssertionError(f"{exc}; hub: {hub.hub.state('erp-b')}; logs: {said}") from None
        assert hub.client("erp-b").stacks()["stacks"] == [], "the hub reaches the installed agent through the uplink"

        owners = subprocess.run(["ps", "-ww", "-eo", "user:20,args"], capture_output=True, text=True).stdout
        assert re.search(r"^fm-agent\s+/usr/bin/python3 /opt/fmappliance/fm-agent.pyz --config", owners, re.M), owners
        uplink = r"^fm-uplink\s+/usr/bin/python3 /opt/fmappliance/fm-agent.pyz uplink --dir /etc/fmappliance/fleet$"
        assert re.search(uplink, owners, re.M), owners
        # The uplink may open the agent's socket but not read the config (its token and secrets).
        sock = os.stat("/run/fm-agent/agent.sock")
        assert stat.S_ISSOCK(sock.st_mode) and grp.getgrgid(sock.st_gid).gr_name == "fmappliance-agent"
        config = os.stat("/etc/fmappliance/config.yaml")
        assert stat.S_IMODE(config.st_mode) == 0o640 and grp.getgrgid(config.st_gid).gr_name == "fmappliance"
        assert "fm-uplink" not in grp.getgrnam("fmappliance").gr_mem
        assert pwd.getpwnam("fm-uplink").pw_gid == grp.getgrnam("fmappliance-agent").gr_gid

        # A managed server opens no port: no process of the agent or the uplink holds a listening TCP socket.
        listening = listening_tcp_inodes()
        for user in ("fm-agent", "fm-uplink"):
            held = socket_inodes_of_user(user)
            assert held, f"no process of {user}"
            assert all(not inodes & listening for inodes in held.values()), (user, held)
    finally:
        gone = purge()
        hub.stop()
    assert_restored(gone, before)
