"""``fm-agent [--config C] fleet join|status|leave``: this server's membership in a dashboard's fleet.

fm-agent fleet join HOST:PORT [--name N] [--token-file F] [--wait S]   token from FM_JOIN_TOKEN, F or stdin (never argv)
fm-agent fleet status [--json]
fm-agent fleet leave

Exit status of join: 0 joined; 2 bad token or input; 3 hub unreachable; 4 the hub's certificate does
not match the token (nothing sent); 5 already joined (leave: not joined); 6 refused by the hub (its
sentence printed).

Join connects, **compares the hub certificate's sha256 with the token before writing a byte**, makes
this server's key (it never leaves) and a CSR, sends ``POST /v1/join`` and stores: in ``fleet.dir``
``uplink.json``, ``agent.key``, ``agent.crt`` and ``hub.sha256`` (what ``fm-agent uplink`` reads), and in
``<agent.state_dir>/fleet.json`` only the sha256 of the API token (the agent picks it up without restart).
Then it starts the uplink where it can (``systemctl restart fm-uplink`` when systemd has that unit;
otherwise it prints the exact command) and waits, at most ``--wait`` seconds (60; 0: not at all),
until the hub says it has the uplink's connections (a probe hello with this server's certificate).
Not seen in time is no error of the join (exit 0): the sentence says what to check.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from fmappliance.agent.fleet_gate import FLEET_FILE, token_sha256
from fmappliance.config import DEFAULT_CONFIG_PATH, ConfigError, load_config
from fmappliance.fleet import certs
from fmappliance.fleet import tls as fleet_tls
from fmappliance.fleet.token import SERVER_NAME_RULE, BadToken, is_valid_server_name, parse
from fmappliance.version import __version__
from fmappliance.wire import format_timestamp

JOINED, BAD_INPUT, UNREACHABLE, MISMATCH, ALREADY, REFUSED = 0, 2, 3, 4, 5, 6
NOT_JOINED = 5
CONNECT_TIMEOUT = 10.0
ANSWER_TIMEOUT = 30.0
UPLINK_FILES = ("uplink.json", "agent.crt", "agent.key", "hub.sha256")
UPLINK_UNIT = "fm-uplink.service"
WAIT_SECONDS = 60.0
PROBE_EVERY = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fm-agent fleet", description="This server in a dashboard's fleet.")
    parser.add_argument("--config", default=argparse.SUPPRESS, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    sub = parser.add_subparsers(dest="command", required=True)
    join = sub.add_parser("join", help="join the fleet of the dashboard at HOST:PORT")
    join.add_argument("hub", metavar="HOST:PORT")
    join.add_argument("--name", help="this server's name in the fleet (default: the one the token names)")
    join.add_argument("--token-file", help="read the join token from this file (else FM_JOIN_TOKEN or stdin)")
    join.add_argument(
        "--wait",
        type=float,
        default=WAIT_SECONDS,
        metavar="S",
        help=f"seconds to wait for the hub to see the uplink (default {WAIT_SECONDS:.0f}; 0: start nothing, wait not)",
    )
    status = sub.add_parser("status", help="whether and how this server is in a fleet")
    status.add_argument("--json", action="store_true")
    sub.add_parser("leave", help="forget the fleet: its tokens stop working at once")
    return parser


def _say(message: str, code: int) -> int:
    print(message, file=sys.stderr if code else sys.stdout)
    return code


def main(argv: list[str], config_argv: list[str] | None = None) -> int:
    args = _parser().parse_args([*(config_argv or []), *argv])
    config_path = getattr(args, "config", DEFAULT_CONFIG_PATH)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _say(f"fm-agent: {exc}", BAD_INPUT)
    fleet_dir = Path(config["fleet"]["dir"])
    fleet_file = Path(config["agent"]["state_dir"]) / FLEET_FILE
    if args.command == "join":
        joined = join(config, fleet_dir, fleet_file, args.hub, args.name, args.token_file)
        if joined != JOINED or args.wait <= 0:
            return joined
        return start_and_wait(fleet_dir, args.wait)
    if args.command == "status":
        return status(fleet_dir, fleet_file, args.json)
    return leave(fleet_dir, fleet_file)


def _read_token(token_file: str | None) -> str:
    if os.environ.get("FM_JOIN_TOKEN"):
        return os.environ["FM_JOIN_TOKEN"]
    if token_file:
        try:
            return Path(token_file).read_text()
        except OSError as exc:
            raise BadToken(f"cannot read the token file {token_file}: {exc.strerror}") from None
    if sys.stdin.isatty():
        return getpass.getpass("Join token (from fm-dashboard fleet token create): ")
    return sys.stdin.readline()


def _joined(fleet_file: Path) -> dict | None:
    try:
        data = json.loads(fleet_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tokens") else None


def join(config: dict, fleet_dir: Path, fleet_file: Path, hub: str, name: str | None, token_file: str | None) -> int:
    try:
        token = parse(_read_token(token_file))
    except BadToken as exc:
        return _say(f"fm-agent fleet join: {exc}", BAD_INPUT)
    if name is not None and not is_valid_server_name(name):
        return _say(f"fm-agent fleet join: {name[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.", BAD_INPUT)
    host, _, port_text = hub.rpartition(":")
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return _say(f"fm-agent fleet join: {hub[:80]!r} is not HOST:PORT (e.g. dash.example.com:9443).", BAD_INPUT)
    current = _joined(fleet_file)
    if current is not None:
        return _say(
            f"This server already joined the fleet of {current.get('hub')} as {current.get('server')}; "
            "to join another, run first: fm-agent fleet leave",
            ALREADY,
        )
    agent = config["agent"]
    reach = f"unix:{agent['socket']}" if agent["socket"] else f"http://127.0.0.1:{agent['port']}"
    if not agent["socket"] and agent["port"] == 0:
        return _say("fm-agent fleet join: the agent listens on a port picked at start (0); give it a fixed port.", 2)

    # 1. Connect and check the hub's certificate against the token: nothing is written before this.
    try:
        raw = socket.create_connection((host, int(port_text)), timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        return _say(f"Cannot reach the dashboard's hub at {hub}: {exc.strerror or exc}.", UNREACHABLE)
    try:
        fleet_tls.tune(raw)
        try:
            tls = fleet_tls.server_context().wrap_socket(raw, server_side=False)
        except (ssl.SSLError, OSError) as exc:
            return _say(f"The service at {hub} did not complete a TLS 1.3 handshake ({exc}); is it the fleet hub?", 3)
        seen = fleet_tls.peer_sha256(tls)
        if seen != token.hub_sha256:
            return _say(
                f"The hub at {hub} presented a certificate (sha256 {seen}) that does not match the join token "
                f"({token.hub_sha256}); nothing was sent. If the dashboard was reinstalled, make a new token "
                "there; otherwise something intercepts the connection.",
                MISMATCH,
            )
        # 2. This server's key (it never leaves) and a CSR.
        try:
            fleet_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            key_path = fleet_dir / "agent.key"
            certs.make_key(key_path)
            csr = certs.make_csr(key_path, name or "server")
        except (OSError, certs.CertError) as exc:
            return _say(f"fm-agent fleet join: cannot make this server's key in {fleet_dir}: {exc}", 1)
        body = json.dumps(
            {
                "token_id": token.token_id,
                "secret": token.secret,
                "name": name,
                "csr_pem": csr,
                "agent_version": __version__,
                "stacks": sorted(config["stacks"]),
            }
        ).encode()
        try:
            tls.settimeout(ANSWER_TIMEOUT)
            conn = http.client.HTTPConnection(host, int(port_text), timeout=ANSWER_TIMEOUT)
            conn.sock = tls
            conn.request("POST", "/v1/join", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw_answer = resp.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:
            return _say(f"The hub at {hub} broke off the join: {exc}.", UNREACHABLE)
    finally:
        raw.close()
    try:
        answer = json.loads(raw_answer)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return _say(f"The hub at {hub} answered {resp.status} with something that is not JSON.", REFUSED)
    if resp.status != 200:
        return _say(f"The hub refused to join this server ({resp.status}): {answer.get('message')}", REFUSED)
    server, pem, api_token = answer.get("server"), answer.get("agent_cert_pem"), answer.get("api_token")
    if (
        not is_valid_server_name(server)
        or not isinstance(pem, str)
        or not isinstance(api_token, str)
        or answer.get("hub_sha256") != token.hub_sha256
    ):
        return _say(f"The hub at {hub} sent an answer this agent cannot use; nothing was stored.", REFUSED)

    # 3. Store: the uplink's files, then the token's hash (last: the agent accepts it from then on).
    try:
        _replace(fleet_dir / "agent.crt", pem.encode(), 0o644)
        _replace(fleet_dir / "hub.sha256", (token.hub_sha256 + "\n").encode(), 0o644)
        uplink = {"hub": hub, "server": server, "agent": reach, "idle": 2, "max": 12}
        _replace(fleet_dir / "uplink.json", (json.dumps(uplink, indent=2) + "\n").encode(), 0o644)
        record = {
            "server": server,
            "hub": hub,
            "hub_sha256": token.hub_sha256,
            "joined": format_timestamp(),
            "tokens": [{"sha256": token_sha256(api_token), "added": format_timestamp(), "expires": None}],
        }
        fleet_file.parent.mkdir(parents=True, exist_ok=True)
        _replace(fleet_file, (json.dumps(record, indent=2) + "\n").encode(), 0o600)
        _hand_over(fleet_dir, [fleet_dir / name for name in UPLINK_FILES])
        _hand_over(fleet_file.parent, [fleet_file])
    except OSError as exc:
        return _say(f"fm-agent fleet join: joined as {server}, but cannot store it: {exc}", 1)
    return _say(f"Joined the fleet of {hub} as {server}.", JOINED)


def start_and_wait(fleet_dir: Path, wait: float) -> int:
    """Start the uplink where this command can, then wait until the hub has its connections."""
    print(_start_uplink(fleet_dir), flush=True)
    deadline = time.monotonic() + wait
    seen: dict | str = "no answer yet"
    while True:
        seen = probe(fleet_dir)
        if isinstance(seen, dict) and seen.get("idle_connections", 0) >= 1:
            return _say(f"The hub sees this server's uplink connected ({seen.get('state')}).", JOINED)
        if time.monotonic() >= deadline:
            break
        time.sleep(PROBE_EVERY)
    said = f"the hub says {seen.get('state')}" if isinstance(seen, dict) else seen
    print(
        f"Joined, but the hub has not seen this server's uplink within {wait:.0f} s ({said}). Check that the "
        f"uplink runs (systemctl status fm-uplink, or: fm-agent uplink --dir {fleet_dir}) and its log; "
        "this server stays joined.",
        file=sys.stderr,
    )
    return JOINED


def _start_uplink(fleet_dir: Path) -> str:
    """``systemctl restart fm-uplink`` when systemd runs and has the unit; else the command to run."""
    by_hand = (
        f"Start the uplink now (as the user that owns {fleet_dir}; it dials the hub, this server opens no port):\n"
        f"  fm-agent uplink --dir {fleet_dir}"
    )
    systemctl = shutil.which("systemctl")
    if not systemctl or not Path("/run/systemd/system").is_dir():
        return by_hand
    try:
        loaded = subprocess.run(
            [systemctl, "show", "--property=LoadState", "--value", UPLINK_UNIT],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if loaded.stdout.strip() != "loaded":
            return by_hand + f"\n(systemd has no {UPLINK_UNIT}: install.sh --agent-only installs it)"
        done = subprocess.run([systemctl, "restart", UPLINK_UNIT], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return by_hand + f"\n(systemctl failed: {exc})"
    if done.returncode != 0:
        return by_hand + f"\n(systemctl restart {UPLINK_UNIT} failed: {done.stderr.strip()[:200]})"
    return f"Started the uplink: systemctl restart {UPLINK_UNIT}"


def probe(fleet_dir: Path) -> dict | str:
    """Ask the hub, as this server (its certificate, the pin checked first), what it sees of the link:
    ``{"server", "state", "idle_connections"}``, or a sentence saying why there is no answer."""
    try:
        up = json.loads((fleet_dir / "uplink.json").read_text())
        pin = (fleet_dir / "hub.sha256").read_text().strip()
        host, _, port = str(up["hub"]).rpartition(":")
        ctx = fleet_tls.server_context(str(fleet_dir / "agent.crt"), str(fleet_dir / "agent.key"))
    except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
        return f"cannot read the uplink's files in {fleet_dir}: {exc}"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_side=False) as tls:
                if fleet_tls.peer_sha256(tls) != pin:
                    return "the hub's certificate does not match the pin; nothing was sent"
                hello = {"v": 1, "server": up["server"], "probe": True, "agent_version": __version__}
                tls.settimeout(CONNECT_TIMEOUT)
                tls.sendall(json.dumps(hello).encode() + b"\n")
                line = tls.recv(4096)
    except (OSError, ssl.SSLError) as exc:
        return f"cannot reach the hub: {exc}"
    try:
        answer = json.loads(line)
    except ValueError:
        return "the hub closed the probe without an answer (is this server removed from the fleet?)"
    return answer if isinstance(answer, dict) else "the hub's answer was not understood"


def _hand_over(directory: Path, files: list[Path]) -> None:
    """Run as root (sudo), give the files to the owner of their directory: fleet.json to the agent's
    user (owner of agent.state_dir), the uplink's files to the uplink's (owner of fleet.dir)."""
    if os.geteuid() != 0:
        return
    owner = directory.stat()
    for path in files:
        if path.exists():
            os.chown(path, owner.st_uid, owner.st_gid)


def _replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def status(fleet_dir: Path, fleet_file: Path, as_json: bool) -> int:
    current = _joined(fleet_file)
    try:
        uplink = json.loads((fleet_dir / "uplink.json").read_text())
    except (OSError, ValueError):
        uplink = None
    info = {
        "joined": current is not None,
        "server": current.get("server") if current else None,
        "hub": current.get("hub") if current else None,
        "hub_sha256": current.get("hub_sha256") if current else None,
        "since": current.get("joined") if current else None,
        "tokens": len(current.get("tokens") or []) if current else 0,
        "uplink_files": uplink is not None,
        "agent": (uplink or {}).get("agent"),
    }
    if as_json:
        print(json.dumps(info, indent=2))
    elif current is None:
        print("This server is not in a fleet (join one: fm-agent fleet join HOST:PORT).")
    else:
        print(
            f"In the fleet of {info['hub']} as {info['server']} since {info['since']} "
            f"(hub certificate sha256 {info['hub_sha256']}; {info['tokens']} fleet token(s)).\n"
            f"Uplink files in {fleet_dir}: {'present' if uplink else 'MISSING'}."
        )
    return 0


def leave(fleet_dir: Path, fleet_file: Path) -> int:
    current = _joined(fleet_file)
    if current is None and not (fleet_dir / "uplink.json").exists():
        return _say("This server is not in a fleet; nothing to leave.", NOT_JOINED)
    try:
        fleet_file.unlink(missing_ok=True)  # first: the fleet's tokens stop working at once
        for name in UPLINK_FILES:
            (fleet_dir / name).unlink(missing_ok=True)
    except OSError as exc:
        return _say(f"fm-agent fleet leave: cannot remove the fleet files: {exc}", 1)
    hub = current.get("hub") if current else "its dashboard"
    return _say(
        f"Left the fleet of {hub}: its tokens no longer work here. Stop the uplink: systemctl disable --now fm-uplink\n"
        "(the dashboard still lists this server until: fm-dashboard fleet remove NAME)",
        JOINED,
    )
