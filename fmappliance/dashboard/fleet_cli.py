"""``fm-dashboard fleet …``: the hub's key and certificate, join tokens, and the servers of the fleet.

fm-dashboard --config C fleet init                       hub key + certificate in fleet.dir (never overwritten);
                                                         prints the certificate's sha256 (64 hex digits)
fm-dashboard --config C fleet token create [--name N] [--ttl S]   a one-use join token and the join command
fm-dashboard --config C fleet token list | revoke ID
fm-dashboard --config C fleet list [--json]
fm-dashboard --config C fleet inventory --format ansible  the servers as an Ansible YAML inventory
fm-dashboard --config C fleet inventory --format prometheus [--target HOST:PORT]  Prometheus file_sd JSON
fm-dashboard --config C fleet rotate-token N              a new API token for N (old one valid 5 more minutes)
fm-dashboard --config C fleet remove N [--yes]

Exit status: 0 done, 1 could not (files, database), 2 bad input.  Everything the hub keeps lives in
the dashboard's state database; the serving dashboard reads it afresh, so no restart is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
from pathlib import Path

from fmappliance.fleet import certs
from fmappliance.fleet.token import SERVER_NAME_RULE, is_valid_server_name


def add_arguments(fleet: argparse.ArgumentParser) -> None:
    fleet.add_argument("--config", default=argparse.SUPPRESS, help="config file (also accepted before 'fleet')")
    sub = fleet.add_subparsers(dest="fleet_command", required=True)
    sub.add_parser("init", help="make the hub's key and certificate in fleet.dir (if missing)")
    tok = sub.add_parser("token", help="join tokens")
    tok_sub = tok.add_subparsers(dest="token_command", required=True)
    create = tok_sub.add_parser("create", help="a one-use join token (printed once)")
    create.add_argument("--name", help="bind the token to this server name")
    create.add_argument("--ttl", type=int, help="seconds the token stays usable (default fleet.join_token_ttl)")
    tok_sub.add_parser("list", help="the join tokens and whether they are usable")
    revoke = tok_sub.add_parser("revoke", help="make an unused join token unusable")
    revoke.add_argument("id", help="the token's 8-character id (fleet token list)")
    listing = sub.add_parser("list", help="the servers of the fleet")
    listing.add_argument("--json", action="store_true", help='print {"servers": [...]}')
    inventory = sub.add_parser(
        "inventory", help="the servers as an Ansible inventory (YAML) or Prometheus file_sd targets (JSON)"
    )
    inventory.add_argument("--format", choices=["ansible", "prometheus"], default="ansible")
    inventory.add_argument(
        "--target",
        help="prometheus: the dashboard's address Prometheus scrapes (HOST[:PORT]; default: this host's name)",
    )
    rotate = sub.add_parser("rotate-token", help="give a server a new API token (the old one works 5 more minutes)")
    rotate.add_argument("name")
    remove = sub.add_parser("remove", help="remove a server: its certificate is refused from now on")
    remove.add_argument("name")
    remove.add_argument("--yes", action="store_true", help="do not ask to type the name")


def _fail(message: str, code: int = 1) -> int:
    print(f"fm-dashboard: {message}", file=sys.stderr)
    return code


def run(config: dict, args: argparse.Namespace) -> int:
    fleet_dir = Path(config["fleet"]["dir"])
    if args.fleet_command == "init":
        return _init(fleet_dir)
    try:
        registry = _registry(config)
        if args.fleet_command == "token":
            if args.token_command == "create":
                return _token_create(config, registry, fleet_dir, args.name, args.ttl)
            if args.token_command == "list":
                return _token_list(registry)
            return _token_revoke(registry, args.id)
        if args.fleet_command == "list":
            return _list(registry, args.json)
        if args.fleet_command == "inventory":
            if args.format == "prometheus":
                return _prometheus_inventory(registry, args.target)
            return _inventory(registry)
        if args.fleet_command == "rotate-token":
            return _rotate(registry, args.name)
        return _remove(registry, args.name, args.yes, config)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"cannot use the state database in {config['dashboard']['state_dir']}: {exc}")


def _registry(config: dict):
    from fmappliance.dashboard.fleet_registry import FleetRegistry
    from fmappliance.dashboard.state_db import DB_FILE_NAME, StateDB

    state_dir = config["dashboard"]["state_dir"]
    db_path = os.path.join(state_dir, DB_FILE_NAME)
    if os.geteuid() == 0 and os.path.exists(db_path):
        owner = os.stat(db_path)
        if owner.st_uid != 0:
            # As the dashboard's user, so no file of its state dir ends up owned by root.
            os.setgid(owner.st_gid)
            os.setuid(owner.st_uid)
    return FleetRegistry(StateDB(state_dir))


def _init(fleet_dir: Path) -> int:
    from fmappliance.dashboard.hub import HubFiles

    files = HubFiles.of(str(fleet_dir))
    try:
        fleet_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        existed = files.key.exists() and files.cert.exists()
        certs.make_key(files.key)
        pin = certs.make_hub_certificate(files.key, files.cert)
        if os.geteuid() == 0:
            # Run as root (install.sh): the dashboard's user, owner of fleet.dir, must read the key.
            owner = fleet_dir.stat()
            for path in (files.key, files.cert):
                os.chown(path, owner.st_uid, owner.st_gid)
    except (OSError, certs.CertError) as exc:
        return _fail(f"cannot make the hub key and certificate in {fleet_dir}: {exc}")
    note = "kept the existing" if existed else "made the"
    print(f"fleet: {note} hub key and certificate in {fleet_dir}; its sha256:", file=sys.stderr)
    print(pin)
    return 0


def _token_create(config: dict, registry, fleet_dir: Path, name: str | None, ttl: int | None) -> int:
    from fmappliance.dashboard.hub import HubFiles
    from fmappliance.wire import format_timestamp

    fleet = config["fleet"]
    if name is not None and not is_valid_server_name(name):
        return _fail(f"{name[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.", 2)
    ttl = fleet["join_token_ttl"] if ttl is None else ttl
    if ttl <= 0:
        return _fail("--ttl must be a positive number of seconds.", 2)
    files = HubFiles.of(str(fleet_dir))
    try:
        hub_sha256 = certs.sha256_of_pem(files.cert.read_bytes())
    except (OSError, certs.CertError):
        return _fail(f"there is no hub certificate in {fleet_dir}; make it first with: fm-dashboard fleet init")
    made, expires = registry.create_token(hub_sha256, name, ttl)
    address = fleet["address"] or fleet["listen"] or "HOST:PORT"
    name_flag = f" --name {name}" if name else " --name NAME"
    print(made)
    print(
        f"\nThe token above works once, until {format_timestamp(expires)}, and is not shown again.\n"
        "On the server to add, run:\n"
        f"  sudo FM_JOIN_TOKEN='{made}' ./install.sh --agent-only --join {address}{name_flag}\n"
        "or, where fmappliance is already installed:\n"
        f"  sudo FM_JOIN_TOKEN='{made}' fm-agent fleet join {address}{name_flag}",
        file=sys.stderr,
    )
    if not fleet["address"]:
        print("(fleet.address is not set: replace the address with one the server can reach)", file=sys.stderr)
    return 0


def _token_list(registry) -> int:
    rows = registry.tokens()
    if not rows:
        print("No join tokens.")
        return 0
    print(f"{'ID':<9} {'NAME':<20} {'STATE':<8} {'EXPIRES':<21} USED BY")
    for row in rows:
        used = f"{row['used_by']} at {row['used_at']} from {row['used_from']}" if row["used_at"] else ""
        print(f"{row['id']:<9} {row['name'] or '(any)':<20} {row['state']:<8} {row['expires']:<21} {used}")
    return 0


def _token_revoke(registry, token_id: str) -> int:
    if registry.revoke_token(token_id):
        print(f"Join token {token_id} revoked.")
        return 0
    return _fail(f"there is no unused join token {token_id[:20]!r} (see: fm-dashboard fleet token list).")


def _list(registry, as_json: bool) -> int:
    servers = registry.servers()
    if as_json:
        print(json.dumps({"servers": servers}, indent=2))
        return 0
    if not servers:
        print("No servers have joined (add one: fm-dashboard fleet token create --name NAME).")
        return 0
    print(f"{'NAME':<20} {'JOINED':<21} {'FROM':<40} AGENT")
    for row in servers:
        print(f"{row['name']:<20} {row['joined']:<21} {row['address']:<40} {row['agent_version'] or ''}")
    return 0


def _inventory(registry) -> int:
    """An Ansible YAML inventory: group ``fmappliance``, one host per server, ``ansible_host`` = the address
    it joined from (behind NAT that is the NAT's address: override it in host_vars)."""
    import yaml

    hosts = {row["name"]: {"ansible_host": row["address"]} for row in registry.servers()}
    print(yaml.safe_dump({"all": {"children": {"fmappliance": {"hosts": hosts}}}}, sort_keys=True), end="")
    return 0


def _prometheus_inventory(registry, target: str | None) -> int:
    """Prometheus ``file_sd`` JSON: one target group per server, scraped at the dashboard's
    ``/metrics/server/<name>`` (the same as ``GET /fleet/prometheus-sd``, for a file)."""
    import json
    import socket

    from fmappliance.dashboard.pages_fleet import prometheus_sd_groups

    target = target or socket.getfqdn()
    if not target or any(c.isspace() or c in "/?#@" for c in target):
        return _fail(f"--target {target[:60]!r} is not a HOST[:PORT].", 2)
    print(json.dumps(prometheus_sd_groups(registry.servers(), target), indent=2))
    return 0


#: How long rotate-token waits for the serving dashboard to deliver the new token.
ROTATE_WAIT_SECONDS = 15.0


def _rotate(registry, name: str) -> int:
    import time

    if not is_valid_server_name(name):
        return _fail(f"{name[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.", 2)
    if not registry.request_rotation(name):
        return _fail(f"there is no server {name} in the fleet (see: fm-dashboard fleet list).")
    deadline = time.monotonic() + ROTATE_WAIT_SECONDS
    while time.monotonic() < deadline:
        if registry.pending_rotation(name) is None:
            print(f"The API token of {name} is rotated; the previous one works 5 more minutes there.")
            return 0
        time.sleep(0.2)
    print(
        f"{name} has not taken its new token yet (is it connected, and is the dashboard running?); "
        "the dashboard delivers it as soon as it can: see fm-dashboard fleet list."
    )
    return 0


def _remove(registry, name: str, yes: bool, config: dict) -> int:
    if not is_valid_server_name(name):
        return _fail(f"{name[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.", 2)
    if name not in {row["name"] for row in registry.servers()}:
        return _fail(f"there is no server {name} in the fleet (see: fm-dashboard fleet list).")
    if not yes:
        if not sys.stdin.isatty():
            return _fail("to remove a server without a terminal, add --yes.", 2)
        typed = input(f"Removing {name} refuses its uplink from now on. Type its name to confirm: ").strip()
        if typed != name:
            return _fail("the name did not match; nothing removed.", 2)
    registry.remove(name)
    print(
        f"Server {name} removed: its certificate is refused from now on. If it is connected, the dashboard tells "
        f"it to forget its fleet token; on {name} itself, also run: fm-agent fleet leave"
    )
    _remove_schedules(config, name)
    return 0


def _remove_schedules(config: dict, name: str) -> None:
    """A removed server's schedules go too, listed first (config.yaml's are named for the operator)."""
    from fmappliance.dashboard.schedule_store import ScheduleStore

    store = ScheduleStore(config["dashboard"]["state_dir"], config_schedules=config.get("schedules") or ())
    for schedule in store.list():
        if schedule.get("server") != name:
            continue
        label = f"{schedule['kind']} {schedule['stack']}/{schedule['site']} {schedule['frequency']} {schedule['time']}"
        if schedule["source"] == "ui" and store.remove(schedule["id"]):
            print(f"  removed its schedule: {label}")
        else:
            print(f"  remove from config.yaml (schedules:, server: {name}): {label}")
