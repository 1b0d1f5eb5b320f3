"""The hub's three doors and its limits, driven with raw TLS clients (no agent needed), and the
man in the middle at join and on the uplink: a TLS proxy with its own certificate receives nothing."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time

import pytest
from support.fleet_world import FleetHub, ServerWorld, fill_handshakes
from support.polling import wait_for

from fmappliance.dashboard import hub as hub_module
from fmappliance.dashboard import hub_join
from fmappliance.fleet import certs
from fmappliance.fleet import tls as fleet_tls


@pytest.fixture
def hub(tmp_path):
    fleet_hub = FleetHub(tmp_path / "hub")
    fleet_hub.pin = fleet_hub.init()
    yield fleet_hub
    fleet_hub.stop()


def _tls(hub, cert=None, key=None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    return fleet_tls.server_context(cert, key).wrap_socket(raw)


def _read_all(sock: ssl.SSLSocket, timeout: float = 5) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ssl.SSLError, ConnectionResetError):
        pass
    return data


def _post(hub, path: str, body: bytes, method: str = "POST") -> tuple[int, dict]:
    sock = _tls(hub)
    assert fleet_tls.peer_sha256(sock) == hub.pin
    sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: hub\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    answer = _read_all(sock)
    sock.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload)


def test_the_join_door_takes_one_small_post_and_says_why_it_refuses(hub):
    hub.start()
    assert _post(hub, "/", b"", "GET")[0] == 404
    status, answer = _post(hub, "/v1/join", b"x" * (17 * 1024))
    assert status == 413 and answer == {"success": False, "message": "The join request is too large (at most 16 KiB)."}
    assert _post(hub, "/v1/join", b"[1, 2]")[0] == 400
    status, answer = _post(
        hub,
        "/v1/join",
        json.dumps({"token_id": "abcdefgh", "secret": "x" * 32, "csr_pem": "x", "agent_version": "0.2.0"}).encode(),
    )
    assert status == 401 and "not known to this dashboard" in answer["message"]
    status, answer = _post(
        hub,
        "/v1/join",
        json.dumps({"token_id": "abcdefgh", "secret": "x", "csr_pem": "x", "agent_version": "0.1.9"}).encode(),
    )
    assert status == 426 and "too old" in answer["message"]
    status, answer = _post(
        hub,
        "/v1/join",
        json.dumps(
            {"token_id": "abcdefgh", "secret": "x", "csr_pem": "x", "name": "Bad_Name", "agent_version": "0.2.0"}
        ).encode(),
    )
    assert status == 400 and "not a valid server name" in answer["message"]
    # A real token with a broken CSR is refused and stays usable.
    token = hub.token("erp-b")
    token_id, secret = token.split("::")[1].split(".")
    status, answer = _post(
        hub,
        "/v1/join",
        json.dumps({"token_id": token_id, "secret": secret, "csr_pem": "junk", "agent_version": "0.2.0"}).encode(),
    )
    assert status == 400 and "csr_pem" in answer["message"]
    assert "usable" in hub.cli("token", "list").stdout
    # Too many refusals from one address: 429 for a while, whatever the request.
    for _ in range(hub_join.JOIN_FAILURES_ALLOWED):
        _post(
            hub,
            "/v1/join",
            json.dumps({"token_id": "abcdefgh", "secret": "x", "csr_pem": "x", "agent_version": "0.2.0"}).encode(),
        )
    status, answer = _post(hub, "/v1/join", b"{}")
    assert status == 429 and "Too many refused join attempts from 127.0.0.1" in answer["message"]


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_fleet_full_is_409(tmp_path):
    hub = FleetHub(tmp_path / "hub", max_servers=1)
    hub.init()
    hub.start()
    try:
        one = ServerWorld(tmp_path / "one", "one")
        two = ServerWorld(tmp_path / "two", "two")
        assert one.join(hub.address, hub.token("one"), "--name", "one").returncode == 0
        done = two.join(hub.address, hub.token("two"), "--name", "two")
        assert done.returncode == 6 and "The fleet is full (1 servers, fleet.max_servers = 1)." in done.stderr
    finally:
        hub.stop()


def test_certificates_the_hub_did_not_issue_or_no_longer_knows_get_nothing(hub, tmp_path):
    hub.start()
    # A certificate from another CA fails the handshake.
    other = tmp_path / "other"
    other.mkdir()
    certs.make_key(other / "ca.key")
    certs.make_hub_certificate(other / "ca.key", other / "ca.crt")
    certs.make_key(other / "a.key")
    (other / "a.crt").write_text(
        certs.sign_csr(certs.make_csr(other / "a.key", "x"), other / "ca.key", other / "ca.crt", "x")
    )
    sock = _tls(hub, str(other / "a.crt"), str(other / "a.key"))
    sock.settimeout(5)
    # TLS 1.3: the client's side of the handshake ends before the hub has checked its certificate;
    # the hub's refusal arrives as an alert on the first read.
    with pytest.raises(ssl.SSLError, match="unknown ca"):
        sock.recv(10)
    sock.close()
    # A certificate the hub signed but that is in no registry row: closed without a byte.
    fleet_dir = tmp_path / "hub" / "fleet"
    certs.make_key(other / "b.key")
    (other / "b.crt").write_text(
        certs.sign_csr(certs.make_csr(other / "b.key", "x"), fleet_dir / "hub.key", fleet_dir / "hub.crt", "ghost")
    )
    sock = _tls(hub, str(other / "b.crt"), str(other / "b.key"))
    sock.sendall(b'{"v":1,"server":"ghost"}\n')
    assert _read_all(sock) == b""
    assert hub.hub.state("ghost")["idle_connections"] == 0


def test_handshake_limits_per_source_and_time(hub, monkeypatch):
    monkeypatch.setattr(hub_module, "HANDSHAKE_SECONDS", 1.0)
    hub.start()
    idle = [socket.create_connection(("127.0.0.1", hub.port), timeout=5) for _ in range(hub_module.MAX_PER_SOURCE)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", hub.port), timeout=5)
    extra.settimeout(0.5)
    assert extra.recv(10) == b"", "the 9th connection from one address is closed at once"
    extra.close()
    # The silent ones are closed after the handshake timeout, and the door opens again.
    for sock in idle:
        sock.settimeout(3)
        assert sock.recv(10) == b""
        sock.close()
    status, _ = _post(hub, "/v1/join", b"{}")
    assert status == 400


class _Interceptor:
    """A TLS server with its own certificate, recording every byte a client sends it."""

    def __init__(self, root):
        root.mkdir(parents=True, exist_ok=True)
        certs.make_key(root / "mitm.key")
        certs.make_hub_certificate(root / "mitm.key", root / "mitm.crt", "fmappliance fleet hub")
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(root / "mitm.crt", root / "mitm.key")
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(raw, server_side=True) as tls:
                    self.handshakes += 1
                    self.received += _read_all(tls, 3)
            except (ssl.SSLError, OSError):
                pass

    def close(self):
        self.listener.close()


def test_a_man_in_the_middle_at_join_receives_nothing(hub, tmp_path):
    hub.start()
    mitm = _Interceptor(tmp_path / "mitm")
    world = ServerWorld(tmp_path / "erp-b", "erp-b")
    token = hub.token("erp-b")
    done = world.join(f"127.0.0.1:{mitm.port}", token, "--name", "erp-b")
    try:
        assert done.returncode == 4, done.stderr
        assert "does not match the join token" in done.stderr and "nothing was sent" in done.stderr
        assert "reinstalled" in done.stderr
        wait_for(lambda: mitm.handshakes == 1, 5, "the interceptor's handshake")
        time.sleep(0.5)
        assert mitm.received == b""
        assert not world.fleet_dir.exists() or not any(world.fleet_dir.iterdir())
        # The token was not spent: it still joins the real hub.
        assert world.join(hub.address, token, "--name", "erp-b").returncode == 0
    finally:
        mitm.close()


def test_an_uplink_checks_the_pin_before_it_writes(hub, tmp_path):
    hub.start()
    mitm = _Interceptor(tmp_path / "mitm")
    world = ServerWorld(tmp_path / "erp-b", "erp-b")
    try:
        assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        uplink_json = world.fleet_dir / "uplink.json"
        settings = json.loads(uplink_json.read_text())
        uplink_json.write_text(json.dumps({**settings, "hub": f"127.0.0.1:{mitm.port}"}))
        world.start_uplink()
        wait_for(lambda: "not the pinned" in world.uplink_output(), 15, "the uplink to refuse the interceptor")
        assert mitm.handshakes >= 1
        assert mitm.received == b""
    finally:
        world.stop()
        mitm.close()


def test_fleet_init_is_idempotent_and_token_create_checks_the_name(hub):
    again = hub.cli("init")
    assert again.returncode == 0 and again.stdout.strip() == hub.pin
    done = hub.cli("token", "create", "--name", "Bad")
    assert done.returncode == 2 and "not a valid server name" in done.stderr
    assert "No join tokens." in hub.cli("token", "list").stdout


def test_the_serving_dashboard_runs_the_hub_only_with_fleet_listen(hub, tmp_path):
    from support.config_factory import write_config
    from support.world import DashboardProcess

    dashboard = DashboardProcess(hub.config_path, hub.config["dashboard"]["port"], tmp_path / "dashboard.log")
    dashboard.start()
    try:
        world = ServerWorld(tmp_path / "erp-b", "erp-b")
        done = world.join(hub.address, hub.token("erp-b"), "--name", "erp-b")
        assert done.returncode == 0, done.stderr
        assert "fleet hub listening on 127.0.0.1:" in dashboard.output()
    finally:
        dashboard.stop()
    # The same dashboard without fleet.listen: no hub, the port is closed.
    plain = write_config(
        tmp_path / "hub", name="plain.yaml", dashboard={"state_dir": hub.config["dashboard"]["state_dir"]}
    )
    from fmappliance.config import load_config

    dashboard = DashboardProcess(plain, load_config(plain)["dashboard"]["port"], tmp_path / "dashboard-plain.log")
    dashboard.start()
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", hub.port), timeout=2)
        assert "fleet hub" not in dashboard.output()
    finally:
        dashboard.stop()


def _registered_link(hub, tmp_path, name="erp-b"):
    """A server joined through the real command; returns a function opening a raw link with its certificate."""
    world = ServerWorld(tmp_path / name, name)
    assert world.join(hub.address, hub.token(name), "--name", name).returncode == 0
    return lambda: _tls(hub, str(world.fleet_dir / "agent.crt"), str(world.fleet_dir / "agent.key"))


def test_the_hello_tells_clock_skew_and_an_outdated_agent(hub, tmp_path):
    hub.start()
    link = _registered_link(hub, tmp_path)
    sock = link()
    hello = {"v": 1, "server": "erp-b", "agent": "ok", "agent_version": "0.2.0", "time": time.time() - 420}
    sock.sendall(json.dumps(hello).encode() + b"\n")
    state = wait_for(lambda: (s := hub.hub.state("erp-b"))["idle_connections"] == 1 and s, 5, "the link to park")
    assert state["state"] == "online"
    assert -425 < state["clock_skew_seconds"] < -415
    assert state["clock_warning"].startswith(
        "erp-b's clock is 420 s behind the dashboard's (fleet.max_clock_skew = 120)"
    )
    old = link()
    old.sendall(json.dumps({**hello, "time": time.time(), "agent_version": "0.1.0"}).encode() + b"\n")
    wait_for(lambda: hub.hub.state("erp-b")["state"] == "outdated", 5, "outdated")
    sock.close()
    old.close()


def test_a_hello_with_another_name_or_extra_bytes_is_closed(hub, tmp_path):
    hub.start()
    link = _registered_link(hub, tmp_path)
    for payload in (b'{"v":1,"server":"erp-c"}\n', b'{"v":1,"server":"erp-b"}\nGET / HTTP/1.1\r\n', b"x" * 5000):
        sock = link()
        sock.sendall(payload)
        assert _read_all(sock) == b""
        sock.close()
    assert hub.hub.state("erp-b")["idle_connections"] == 0


def test_at_most_64_handshakes_in_progress(hub):
    hub.start()
    held = fill_handshakes(hub.port, first_source=2)  # and the 65th is refused
    for sock in held:
        sock.close()

    def joins_again() -> bool:
        try:
            return _post(hub, "/v1/join", b"{}")[0] == 400
        except OSError:  # still full for a moment: closed at once
            return False

    wait_for(joins_again, 5, "the hub to take joins again")


def test_the_hub_takes_its_port_from_systemd_socket_activation(hub, tmp_path):
    """As under a socket unit: the port is bound by someone else and passed as fd 3 (LISTEN_PID/LISTEN_FDS)."""
    import subprocess
    import sys

    from support.world import DashboardProcess

    bound = socket.create_server(("127.0.0.1", hub.port))
    log_path = tmp_path / "activated.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" -m fmappliance.dashboard --config "$1"']
            + [sys.executable, str(hub.config_path)],
            close_fds=False,  # fd 3 is the activated socket (dup2 below), as systemd hands it over
            preexec_fn=lambda: os.dup2(bound.fileno(), 3),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        probe = DashboardProcess(hub.config_path, hub.config["dashboard"]["port"], log_path)
        wait_for(lambda: _ready(probe), 15, "the socket-activated dashboard")
        world = ServerWorld(tmp_path / "erp-b", "erp-b")
        done = world.join(hub.address, hub.token("erp-b"), "--name", "erp-b")
        assert done.returncode == 0, done.stderr + log_path.read_text()
        assert f"fleet hub listening on 127.0.0.1:{hub.port} (socket from systemd)" in log_path.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
        bound.close()


def _ready(probe) -> bool:
    try:
        return probe.is_ready()
    except OSError:
        return False


def test_a_dashboard_whose_hub_cannot_listen_says_so(hub, tmp_path):
    from support.fleet_world import run

    with socket.create_server(("127.0.0.1", hub.port)):
        done = run("fmappliance.dashboard", ["--config", str(hub.config_path)], timeout=30)
    assert done.returncode == 1
    assert f"the fleet hub cannot listen on 127.0.0.1:{hub.port}: Address already in use" in done.stderr
    missing = FleetHub(tmp_path / "no-init")
    done = run("fmappliance.dashboard", ["--config", str(missing.config_path)], timeout=30)
    assert done.returncode == 1 and "make them with: fm-dashboard fleet init" in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="hands files over to another user: needs root, as install.sh runs")
def test_run_as_root_the_commands_hand_their_files_to_the_services_users(hub, tmp_path):
    nobody = 65534
    fresh = FleetHub(tmp_path / "fresh")
    fleet_dir = tmp_path / "fresh" / "fleet"
    fleet_dir.mkdir()
    os.chown(fleet_dir, nobody, nobody)
    assert fresh.cli("init").returncode == 0
    assert {(fleet_dir / n).stat().st_uid for n in ("hub.key", "hub.crt")} == {nobody}
    hub.start()
    world = ServerWorld(tmp_path / "erp-b", "erp-b")
    world.fleet_dir.mkdir()
    os.chown(world.fleet_dir, nobody, nobody)
    world.state_dir.mkdir(parents=True, exist_ok=True)
    os.chown(world.state_dir, nobody + 1, nobody + 1)
    assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
    assert {p.stat().st_uid for p in world.fleet_dir.iterdir()} == {nobody}
    assert (world.state_dir / "fleet.json").stat().st_uid == nobody + 1
