"""The real nginx with the installer's site, in front of the agent and dashboard zipapps.

Everything runs as the appliance would: install.sh renders the site (--root), nginx (Debian
package) serves it on free high ports with a self-signed certificate, the agent and the
dashboard run from the built zipapps with /usr/bin/python3 (W^X memory denied where the kernel
can, like MemoryDenyWriteExecute=yes), and the agent drives the docker test double.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import random
import re
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from install_harness import (
    SESSION_COOKIE,
    SITE,
    SYSTEM_PYTHON,
    Appliance,
    NginxSite,
    Response,
    free_port,
    install_env,
    make_cert,
    run_install,
    start_appliance,
    stop,
)

pytestmark = pytest.mark.nginx

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "strict-transport-security": "max-age=63072000",
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": (
        "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), "
        "magnetometer=(), microphone=(), midi=(), payment=(), usb=()"
    ),
}


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, dist):
    procs: list = []
    try:
        yield start_appliance(tmp_path_factory.mktemp("appliance"), dist, procs)
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def accel_appliance(tmp_path_factory, dist):
    procs: list = []
    try:
        # A host nginx.conf that compresses every type (Debian's has `gzip on`; operators widen
        # gzip_types): the site's own locations must still hand out backups as they are.
        yield start_appliance(
            tmp_path_factory.mktemp("accel"), dist, procs, download_mode="accel", extra_http="gzip on; gzip_types *;"
        )
    finally:
        for proc in reversed(procs):
            stop(proc)


def assert_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.header(name) == [value], (response.status, name, response.header(name))


def download_path(app: Appliance, part_suffix: str = ".sql.gz") -> tuple[str, dict]:
    entry = next(f for f in app.manifest["files"] if f["name"].endswith(part_suffix))
    return f"/download/prod/{SITE}/{entry['name']}", entry


# ------------------------------------------------------------------ TLS


def test_tls_1_2_and_1_3_are_accepted(appliance):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = appliance.tls_context(minimum_version=version, maximum_version=version)
        with socket.create_connection(("127.0.0.1", appliance.nginx.https_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == version.name.replace("v1_", "v1.")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_1_1_and_older_are_refused_by_the_server(appliance, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")  # so that the refusal can only come from nginx
    ctx.minimum_version = getattr(ssl.TLSVersion, version)
    ctx.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", appliance.nginx.https_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert "NO_PROTOCOLS_AVAILABLE" not in str(refused.value), "this client cannot offer the old version at all"


def test_tls_session_tickets_are_off(appliance):
    ctx = appliance.tls_context(maximum_version=ssl.TLSVersion.TLSv1_2)
    with socket.create_connection(("127.0.0.1", appliance.nginx.https_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while tls.recv(65536):
                pass
            assert not tls.session.has_ticket


# ------------------------------------------------------------------ HTTP and hosts


def test_plain_http_redirects_to_https_keeping_the_method(appliance):
    conn = http.client.HTTPConnection("127.0.0.1", appliance.nginx.http_port, timeout=10)
    conn.request("GET", "/login?next=/dashboard", headers={"Host": "localhost"})
    response = conn.getresponse()
    assert response.status == 308
    assert response.getheader("Location") == f"https://localhost:{appliance.nginx.https_port}/login?next=/dashboard"
    assert response.getheader("Strict-Transport-Security") == "max-age=63072000"


def test_unknown_host_on_plain_http_gets_no_answer(appliance):
    conn = http.client.HTTPConnection("127.0.0.1", appliance.nginx.http_port, timeout=10)
    conn.request("GET", "/", headers={"Host": "scanner.example"})
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()


def test_unknown_sni_is_refused_during_the_handshake(appliance):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", appliance.nginx.https_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="scanner.example")


def test_unknown_host_header_over_tls_gets_no_answer(appliance):
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        appliance.https("GET", "/login", host="scanner.example")


def site_without_dashboard(root: Path, tmp_path: Path, http_port: int, https_port: int, nowhere: int) -> NginxSite:
    """The installed site served by a real nginx with a fresh certificate, its dashboard port answering nothing."""
    cert, key = make_cert(tmp_path / "tls")
    return NginxSite(
        root,
        tmp_path / "nginx",
        http_port,
        https_port,
        dashboard_port=nowhere,
        backups_dir=tmp_path / "backups",
        cert=cert,
        key=key,
    ).start()


def test_without_a_domain_clients_without_sni_get_the_site_and_unknown_hosts_are_dropped(dist, tmp_path):
    """Self-signed mode: reached by address, browsers send no SNI, so the site is the TLS default."""
    root = tmp_path / "root"
    http_port, https_port, nowhere = free_port(), free_port(), free_port()
    proc = run_install(
        root,
        "--http-port",
        str(http_port),
        "--https-port",
        str(https_port),
        env=install_env(dist, FM_SERVER_NAMES="localhost 127.0.0.1"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "self-signed" in proc.stdout
    site = site_without_dashboard(root, tmp_path, http_port, https_port, nowhere)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE

        def get(host: str) -> http.client.HTTPResponse:
            raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
            conn = http.client.HTTPSConnection("127.0.0.1", https_port, timeout=10)
            conn.sock = ctx.wrap_socket(raw, server_hostname=None)  # an address: no SNI
            conn.request("GET", "/healthz", headers={"Host": f"{host}:{https_port}"})
            return conn.getresponse()

        response = get("127.0.0.1")
        assert response.status == 502  # nginx answered for the dashboard, which is not running here
        assert response.getheader("Strict-Transport-Security") == "max-age=63072000"
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            get("scanner.example")
    finally:
        site.stop()


# ------------------------------------------------------------------ headers


def test_security_headers_on_a_page(appliance):
    response = appliance.https("GET", "/dashboard")
    assert response.status == 200
    assert_security_headers(response)


def test_security_headers_on_a_404(appliance):
    response = appliance.https("GET", "/no/such/page")
    assert response.status == 404
    assert_security_headers(response)


def test_security_headers_on_an_nginx_error(appliance):
    response = appliance.https(
        "POST", "/login", body=b"x" * (2 * 1024 * 1024), headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 413
    assert_security_headers(response)


def test_server_version_is_not_disclosed(appliance):
    response = appliance.https("GET", "/healthz")
    assert response.header("Server") in ([], ["nginx"])


# ------------------------------------------------------------------ downloads


def test_download_through_nginx_dashboard_and_agent_matches_the_manifest(appliance):
    path, entry = download_path(appliance)
    response = appliance.https("GET", path)
    assert response.status == 200, response.body[:300]
    assert hashlib.sha256(response.body).hexdigest() == entry["sha256"]
    assert len(response.body) == entry["size"]
    assert_security_headers(response)
    assert response.header("Content-Disposition") == [f'attachment; filename="{entry["name"]}"']


def test_download_with_x_accel_redirect_is_sent_by_nginx_and_matches_the_manifest(accel_appliance):
    path, entry = download_path(accel_appliance, ".files.tar")
    response = accel_appliance.https("GET", path)
    assert response.status == 200, response.body[:300]
    assert hashlib.sha256(response.body).hexdigest() == entry["sha256"]
    assert_security_headers(response)
    assert response.header("Content-Disposition") == [f'attachment; filename="{entry["name"]}"']
    assert response.header("X-Accel-Redirect") == []


@pytest.mark.parametrize("mode", ["stream", "accel"])
def test_an_interrupted_download_can_resume_with_a_range_request(appliance, accel_appliance, mode):
    app = appliance if mode == "stream" else accel_appliance
    path, entry = download_path(app)
    whole = app.https("GET", path).body
    part = app.https("GET", path, headers={"Range": "bytes=10-"})
    assert part.status == 206, part.status
    assert part.body == whole[10:]
    assert part.header("Content-Range") == [f"bytes 10-{entry['size'] - 1}/{entry['size']}"]
    assert_security_headers(part)


def test_an_accel_download_is_neither_recompressed_nor_loses_range_under_a_host_wide_gzip(accel_appliance):
    """A browser always offers gzip: the backup still comes byte for byte, and a resume still works."""
    path, entry = download_path(accel_appliance, ".files.tar")
    headers = {"Accept-Encoding": "gzip, deflate, br"}
    whole = accel_appliance.https("GET", path, headers=headers)
    assert whole.status == 200, whole.body[:300]
    assert whole.header("Content-Encoding") == []
    assert hashlib.sha256(whole.body).hexdigest() == entry["sha256"]
    part = accel_appliance.https("GET", path, headers={**headers, "Range": "bytes=10-"})
    assert part.status == 206, part.status
    assert part.header("Content-Encoding") == []
    assert part.body == whole.body[10:]


def test_internal_backup_location_is_not_reachable_from_outside(accel_appliance):
    _, entry = download_path(accel_appliance)
    response = accel_appliance.https("GET", f"/_protected_backups/prod/{SITE}/{entry['name']}")
    assert response.status == 404
    assert entry["sha256"].encode() not in response.body


def test_download_requires_a_session_even_through_nginx(appliance):
    path, _ = download_path(appliance)
    response = appliance.https("GET", path, headers={"Cookie": ""})
    assert response.status == 303 and "/login?next=" in response.header("Location")[0]


def test_a_client_set_x_forwarded_for_is_overwritten_by_nginx(appliance):
    """The audit log records the real client address, not what the client claims."""
    page = appliance.https("GET", "/login", headers={"Cookie": ""})
    nonce = next(v.split(";")[0].split("=", 1)[1] for v in page.header("Set-Cookie") if v.startswith("fmlogin="))
    token = page.body.decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    form = f"username=spoofer&password=nope&csrf_token={token}".encode()
    failed = appliance.https(
        "POST",
        "/login",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"fmlogin={nonce}",
            "Origin": f"https://localhost:{appliance.nginx.https_port}",
            "X-Forwarded-For": "203.0.113.66",
        },
    )
    assert failed.status == 401  # a wrong password, answered by the dashboard (so it reached the audit log)
    audit = appliance.https("GET", "/audit").body.decode()
    row = next(line for line in audit.splitlines() if "spoofer" in line)
    assert "203.0.113.66" not in audit
    assert "127.0.0.1" in row


def test_the_dashboard_believes_forwarding_headers_only_with_nginxs_secret(appliance):
    """Issue 21, item 12: any process that can reach the dashboard is not nginx unless it has the secret."""
    include = appliance.root / "etc/nginx/snippets/fm-proxy-secret.conf"
    secret_file = appliance.root / "etc/fmappliance/proxy-secret"
    secret = secret_file.read_text().strip()
    assert f'proxy_set_header X-Fmappliance-Proxy "{secret}";' in include.read_text()
    assert (include.stat().st_mode & 0o777, secret_file.stat().st_mode & 0o777) == (0o600, 0o640)
    assert (
        f"include {appliance.root}/etc/nginx/snippets/fm-proxy-secret.conf;"
        in (appliance.nginx.workdir / "site.conf").read_text()
    )

    def direct(extra: dict) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", appliance.dashboard_port, timeout=10)
        conn.request("GET", "/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9", **extra})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.getheader("Set-Cookie") or ""

    assert "Secure" not in direct({}), "a forged X-Forwarded-Proto without the secret is not believed"
    assert "Secure" not in direct({"X-Fmappliance-Proxy": "x" * len(secret)})
    assert "Secure" in direct({"X-Fmappliance-Proxy": secret})
    # Through nginx (which adds the secret) the session cookie is the HTTPS one: every signed-in test relies on it.
    assert appliance.session


def post_from(app: Appliance, source: str, path: str) -> int:
    sock = tls_from(app, source)
    conn = http.client.HTTPSConnection("localhost", app.nginx.https_port, timeout=30)
    conn.sock = sock
    conn.request(
        "POST",
        path,
        body=b"code=000000",
        headers={"Host": f"localhost:{app.nginx.https_port}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize("path,source", [("/login/code", "127.0.0.61"), ("/account/verify", "127.0.0.62")])
def test_second_factor_and_step_up_codes_share_the_login_rate_limit(appliance, path, source):
    """Issue 21, item 3: wrong codes cost as much as wrong passwords at nginx."""
    statuses = [post_from(appliance, source, path) for _ in range(8)]
    assert 429 in statuses and statuses.index(429) <= 6, statuses


def v6_key(site: str, address: str) -> str:
    """What the site's ``map $remote_addr $fm_client`` gives for ``address`` (first matching regex)."""
    block = site.split("map $remote_addr $fm_client {", 1)[1].split("\n}", 1)[0]
    for pattern, value in re.findall(r'^\s*"~([^"]+)"\s+([^;]+);', block, re.M):
        found = re.search(pattern, address)
        if found:
            return re.sub(r"\$(\d)", lambda m, found=found: found.group(int(m.group(1))), value)
    return "(binary address)"


def test_ipv6_clients_are_limited_by_their_64(appliance):
    site = (appliance.root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
    assert "limit_req_zone $fm_client zone=fm_requests" in site and "POST    $fm_client;" in site
    rng = random.Random(21)
    for _ in range(3000):
        value = rng.getrandbits(128)
        # Many zero groups, so that "::" turns up everywhere it can.
        value &= int("".join(rng.choice("0f") for _ in range(32)), 16)
        address = ipaddress.IPv6Address(value)
        prefix = ":".join(f"{int(g, 16):x}" for g in address.exploded.split(":")[:4])
        if "." in str(address):  # ::ffff:a.b.c.d and the like: a v4 client in v6 clothes, keyed by address
            continue
        assert v6_key(site, str(address)) == prefix + "::/64", str(address)
    # Two hosts of one /64, written differently, are one client; the next /64 is another.
    assert v6_key(site, "2001:db8:1:2::1") == v6_key(site, "2001:db8:1:2:aa:bb:cc:dd") == "2001:db8:1:2::/64"
    assert v6_key(site, "2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert v6_key(site, "192.0.2.1") == "(binary address)"


# ------------------------------------------------------------------ slow clients and connection limits


def tls_from(app: Appliance, source: str) -> ssl.SSLSocket:
    """A TLS connection to nginx from another loopback address (each has its own limits)."""
    raw = socket.create_connection(("127.0.0.1", app.nginx.https_port), timeout=10, source_address=(source, 0))
    return app.tls_context().wrap_socket(raw, server_hostname="localhost")


def start_trickling_post(app: Appliance, source: str, path: str) -> ssl.SSLSocket:
    """A POST whose body never finishes: headers and the first bytes of a 100 kB body."""
    conn = tls_from(app, source)
    conn.sendall(
        f"POST {path} HTTP/1.1\r\nHost: localhost:{app.nginx.https_port}\r\nCookie: {SESSION_COOKIE}={app.session}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\nusername=".encode()
    )
    return conn


def status_of(conn: ssl.SSLSocket) -> int | None:
    """The status nginx answered on conn, or None when it is still waiting for the body."""
    conn.settimeout(2)
    try:
        head = conn.recv(200)
    except (TimeoutError, ssl.SSLError, OSError):
        return None
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None


def test_downloads_take_only_get_and_head(appliance):
    path, _ = download_path(appliance)
    for method in ("POST", "PUT", "DELETE"):
        response = appliance.https(method, path, body=b"x", headers={"Content-Type": "application/octet-stream"})
        assert response.status == 403, (method, response.status)
        assert b"<center>nginx</center>" in response.body, "refused by nginx, the dashboard never saw it"
    assert appliance.https("HEAD", path).status == 200


def test_slow_request_bodies_from_many_addresses_do_not_take_the_dashboard_down(appliance):
    """~100 trickling POSTs once held every dashboard connection and /healthz stopped answering."""
    path, _ = download_path(appliance)
    held = []
    try:
        for n in range(6):
            for _ in range(20):
                held.append(start_trickling_post(appliance, f"127.0.0.{10 + n}", path))
                held.append(start_trickling_post(appliance, f"127.0.0.{10 + n}", "/login"))
        probe = tls_from(appliance, "127.0.0.2")
        probe.sendall(
            f"GET /healthz HTTP/1.1\r\nHost: localhost:{appliance.nginx.https_port}\r\nConnection: close\r\n\r\n".encode()
        )
        assert probe.recv(200).startswith(b"HTTP/1.1 200"), "the dashboard still answers"
        probe.close()
    finally:
        for conn in held:
            conn.close()


def test_one_address_gets_at_most_20_requests_in_progress(appliance):
    # Not /login: its own rate limit would answer 429 first.
    held = [start_trickling_post(appliance, "127.0.0.30", f"/site/prod/{SITE}/backup") for _ in range(25)]
    try:
        statuses = [status_of(conn) for conn in held]
        assert statuses.count(429) >= 5, statuses
        assert statuses.count(None) <= 20, statuses
    finally:
        for conn in held:
            conn.close()


# ------------------------------------------------------------------ live logs (Server-Sent Events)


def service_log(appliance):
    """The docker double's state of the appliance: ``write_log`` plays the backend service writing."""
    from double_state import DoubleWorld  # on sys.path since make_world

    return DoubleWorld(appliance.tmp / "double-state")


def test_live_log_events_pass_nginx_unbuffered(appliance):
    raw = socket.create_connection(("127.0.0.1", appliance.nginx.https_port), timeout=10)
    tls = appliance.tls_context().wrap_socket(raw, server_hostname="localhost")
    conn = http.client.HTTPSConnection("localhost", appliance.nginx.https_port, timeout=10)
    conn.sock = tls
    conn.request(
        "GET",
        "/stack/prod/logs/stream?service=backend&tail=1",
        headers={"Host": f"localhost:{appliance.nginx.https_port}", "Cookie": f"{SESSION_COOKIE}={appliance.session}"},
    )
    response = conn.getresponse()
    try:
        assert response.status == 200
        assert response.getheader("Content-Type").startswith("text/event-stream")
        assert response.getheader("Content-Length") is None
        assert response.getheader("Content-Security-Policy") == CSP
        assert response.readline() == b"retry: 5000\n"  # the first event came through at once
        service_log(appliance).write_log("frappe_docker", "backend", "passed through nginx")
        while True:  # nginx holds nothing back: the new line arrives while the stream stays open
            line = response.readline()
            assert line, "the stream ended"
            if line.startswith(b"data: ") and line.rstrip().endswith(b" passed through nginx"):
                break
    finally:
        tls.close()
        conn.close()


def test_live_log_lines_reach_a_browser_through_nginx_within_a_second(appliance):
    # In its own process: the browser suite, in the same pytest run, keeps Playwright's sync API busy here.
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parent / "browser_live_log.py"),
            f"https://localhost:{appliance.nginx.https_port}",
            appliance.session,
            str(appliance.tmp / "double-state"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ------------------------------------------------------------------ login rate limit (last: it uses up the burst)


def test_repeated_failed_logins_get_429_with_security_headers(appliance):
    statuses = []
    for _ in range(8):
        response = appliance.login(password="wrong password")
        statuses.append(response.status)
        if response.status == 429:
            assert_security_headers(response)
            break
    assert statuses[-1] == 429, statuses


# ------------------------------------------------------------------ /metrics


def test_metrics_are_refused_by_nginx_when_no_address_is_allowed(appliance):
    """The installer's default (dashboard.metrics_allow empty): nginx denies /metrics to everyone."""
    response = appliance.https("GET", "/metrics", headers={"Authorization": "Bearer " + "m" * 40, "Cookie": ""})
    assert response.status == 403
    assert_security_headers(response)


def test_metrics_pass_only_from_the_allowed_addresses(dist, tmp_path):
    from support.config_factory import write_config

    cert, key = make_cert(tmp_path / "tls")
    (tmp_path / "stack").mkdir()
    statuses = {}
    for allow in (["127.0.0.1"], ["10.9.9.0/24", "::1"]):
        root = tmp_path / f"root-{len(statuses)}"
        config = write_config(
            tmp_path,
            stacks={"prod": {"type": "compose", "path": str(tmp_path / "stack")}},
            dashboard={"metrics_allow": allow},
        )
        (root / "etc/fmappliance").mkdir(parents=True)
        (root / "etc/fmappliance/config.yaml").write_text(config.read_text())
        http_port, https_port, nowhere = free_port(), free_port(), free_port()
        proc = run_install(
            root,
            "--domain",
            "localhost",
            "--http-port",
            str(http_port),
            "--https-port",
            str(https_port),
            env=install_env(dist),
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        rendered = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
        assert all(f"allow {entry};" in rendered for entry in allow)
        site = NginxSite(
            root,
            tmp_path / f"nginx-{len(statuses)}",
            http_port,
            https_port,
            dashboard_port=nowhere,
            backups_dir=tmp_path / "backups",
            cert=cert,
            key=key,
        ).start()
        try:
            ctx = ssl.create_default_context(cafile=str(cert))
            raw = socket.create_connection(("127.0.0.1", https_port), timeout=10)
            conn = http.client.HTTPSConnection("localhost", https_port, timeout=10)
            conn.sock = ctx.wrap_socket(raw, server_hostname="localhost")
            conn.request("GET", "/metrics", headers={"Host": f"localhost:{https_port}"})
            statuses[tuple(allow)] = conn.getresponse().status
        finally:
            site.stop()
    # Allowed: nginx passes the request on (502: no dashboard runs behind this nginx); not allowed: 403.
    assert statuses == {("127.0.0.1",): 502, ("10.9.9.0/24", "::1"): 403}


# ------------------------------------------------------------------ reload


def test_a_reload_nginx_refuses_is_reported_and_the_previous_configuration_keeps_serving(dist, tmp_path):
    """A site that passes `nginx -t` and that the running master still refuses (a limit_req zone given
    another key: nginx logs [emerg], keeps the old configuration, and `nginx -s reload` exits 0) is
    reported by the installer's reload with exit status 3 and nginx's reason; a good one is taken."""
    root = tmp_path / "root"
    http_port, https_port, nowhere, probe_port = free_port(), free_port(), free_port(), free_port()
    proc = run_install(root, "--http-port", str(http_port), "--https-port", str(https_port), env=install_env(dist))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = site_without_dashboard(root, tmp_path, http_port, https_port, nowhere)
    conf = tmp_path / "nginx" / "site.conf"
    previous = conf.read_text()
    # What a new configuration adds: a server on another port, answering only once nginx took it.
    probe = f'\nserver {{ listen 127.0.0.1:{probe_port}; return 200 "taken\\n"; }}\n'
    zone = "limit_req_zone $fm_client zone=fm_requests"
    assert zone in previous

    def reload() -> subprocess.CompletedProcess:
        argv = [SYSTEM_PYTHON]
        argv += [
            str(dist / "fm-agent.pyz"),
            "installer",
            "nginx-reload",
            "--pid-file",
            str(tmp_path / "nginx/nginx.pid"),
        ]
        argv += ["--error-log", str(site.logs / "error.log"), "--", *site.argv("-s", "reload")]
        env = {"PATH": "/usr/bin:/bin", "SHIV_ROOT": str(tmp_path / "shiv")}
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    def healthz() -> http.client.HTTPResponse:
        ctx = ssl.create_default_context(cafile=str(site.cert))
        conn = http.client.HTTPSConnection("localhost", https_port, timeout=10, context=ctx)
        conn.request("GET", "/healthz", headers={"Host": f"localhost:{https_port}"})
        return conn.getresponse()

    def probe_answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", probe_port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return b"taken" in s.recv(4096)
        except OSError:
            return False

    try:
        conf.write_text(previous.replace(zone, "limit_req_zone $binary_remote_addr zone=fm_requests") + probe)
        assert site.check().returncode == 0, "the trap: nginx -t accepts it"
        refused = reload()
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert "nginx refused the new configuration and keeps serving the previous one" in refused.stderr
        assert 'limit_req "fm_requests" uses the "$binary_remote_addr" key' in refused.stderr, refused.stderr
        # Still the previous configuration: the site answers (502: no dashboard behind it), the probe does not.
        response = healthz()
        assert response.status == 502 and response.getheader("Strict-Transport-Security") == "max-age=63072000"
        assert not probe_answers()

        conf.write_text(previous + probe)
        taken = reload()
        assert taken.returncode == 0, taken.stdout + taken.stderr
        assert "nginx took the new configuration" in taken.stdout
        assert probe_answers() and healthz().status == 502
    finally:
        site.stop()
