"""``fm-agent.pyz installer <command>``: the parts of install.sh written in Python.

    discover       choose the agent user, find stacks and the fm binary (prints key value lines)
    write-config   write a new config.yaml (secrets made here, never on a command line)
    config-values  the values of an existing config the installer needs (key value lines)
    other-sites    nginx config files that serve other sites (one per line)
    healthz        exit 0 when the dashboard answers /healthz (on its socket or port)
    nginx-reload   run nginx's reload command and wait until the master has taken the new configuration
    render         fill a unit or nginx template (@KEY@ placeholders, #@TAG lines)
    migrate-config move an installer-made TCP config to the Unix sockets (prints the sections moved)
    add-dashboard-key  add dashboard.KEY: VALUE to a config that lacks it (prints "added" when it did)
    add-fleet-hub  add fleet.listen and fleet.address to a config that has neither (prints "added" when it did)
    supervise      run a service without systemd: restart it with back-off, rotate its log

An operator-facing refusal is one line on stderr and exit status 3.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys

from fmappliance.installer.discovery import (
    Discovery,
    InstallerStop,
    checked_docker_binary,
    choose_agent_user,
    discover_stacks,
    find_fm_binary,
    find_fm_homes,
)

STOP_STATUS = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fm-agent installer", description="Helpers of install.sh.")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("discover")
    d.add_argument("--search", default="/home/* /root")
    d.add_argument("--fm-home", default="")
    d.add_argument("--requested-user", default="")
    d.add_argument("--recorded-user", default="")
    d.add_argument(
        "--recorded-explicit", action="store_true", help="the recorded user was named with FM_AGENT_USER back then"
    )
    d.add_argument("--fm-binary", default="", help="an explicit fm path (FM_BINARY)")
    d.add_argument("--fm-on-path", default="")
    d.add_argument("--docker-binary", default="", help="the docker the installer checked (absolute path)")
    d.add_argument("--compose-json", default="", help="file with `docker compose ls --all --format json` output")
    d.add_argument("--stacks-out", required=True)
    d.add_argument("--user-only", action="store_true", help="choose the agent user only (the config exists already)")
    d.add_argument(
        "--runtime-base", default="/run/user", help="where rootless docker sockets are (<base>/<uid>/docker.sock)"
    )
    w = sub.add_parser("write-config")
    w.add_argument("--out", required=True)
    w.add_argument("--password-out", required=True)
    w.add_argument("--stacks", required=True, help="JSON file written by discover")
    w.add_argument("--fm-binary", default="")
    w.add_argument("--admin-user", default="admin")
    w.add_argument("--download-mode", default="accel")
    w.add_argument("--state-dir", required=True)
    w.add_argument("--backups-dir", help="default: the schema's backups.base_path")
    _socket_options(w)
    w.add_argument("--proxy-secret-file", default="")
    w.add_argument("--docker-binary", default="")
    v = sub.add_parser("config-values")
    v.add_argument("config")
    o = sub.add_parser("other-sites")
    o.add_argument("nginx_dir")
    o.add_argument("--shown-as", default="", help="the path to print instead of nginx_dir (--root)")
    m = sub.add_parser("migrate-config")
    m.add_argument("config")
    _socket_options(m)
    k = sub.add_parser("add-dashboard-key")
    k.add_argument("config")
    k.add_argument("key")
    k.add_argument("value")
    f = sub.add_parser("add-fleet-hub")
    f.add_argument("config")
    f.add_argument("listen")
    f.add_argument("address")
    s = sub.add_parser("supervise")
    s.add_argument("--name", required=True, help="the service's name, for the log")
    s.add_argument("--log", required=True, help="the service's log file (rotated)")
    s.add_argument("--max-bytes", type=int, default=10 * 1024 * 1024, help="rotate before the log passes this size")
    s.add_argument("--keep", type=int, default=5, help="rotated logs kept (<log>.1 … <log>.N)")
    s.add_argument("--max-delay", type=float, default=60.0, help="longest wait before a restart (seconds)")
    s.add_argument("--stable", type=float, default=30.0, help="a run this long resets the back-off (seconds)")
    s.add_argument("--child-pidfile", default="", help="where the running service's pid is kept")
    s.add_argument("service", nargs=argparse.REMAINDER, help="-- the service's command")
    r = sub.add_parser("render")
    r.add_argument("template")
    r.add_argument("out")
    r.add_argument("tags", help="space-separated tags switched on")
    r.add_argument("values", nargs="*", metavar="KEY=VALUE")
    n = sub.add_parser("nginx-reload")
    n.add_argument("--pid-file", default="/run/nginx.pid", help="the running master's pid file")
    n.add_argument("--error-log", default="", help="nginx's main error log (where a refused reload says why)")
    n.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the new workers")
    n.add_argument(
        "reload", nargs=argparse.REMAINDER, help="-- the reload command (nginx -s reload, systemctl reload nginx)"
    )
    h = sub.add_parser("healthz")
    h.add_argument("--socket", default="")
    h.add_argument("--port", type=int, default=0)
    return parser


def _socket_options(parser: argparse.ArgumentParser) -> None:
    """The services' sockets (of a new or migrated config) and their groups."""
    for service in ("agent", "dashboard"):
        parser.add_argument(f"--{service}-socket", help=f"default: the schema's {service}.socket")
        parser.add_argument(f"--{service}-socket-group", default="")


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.loads(fh.read() or "null")
    except (OSError, ValueError):
        return None


def discover(args) -> int:
    homes = find_fm_homes(args.search, args.fm_home)
    agent = choose_agent_user(
        homes, args.requested_user, args.recorded_user, args.runtime_base, recorded_explicit=args.recorded_explicit
    )
    found, fm, fm_notes, docker = Discovery(), "", list[str](), ""
    if not args.user_only:
        projects = _read_json(args.compose_json) if args.compose_json else None
        found = discover_stacks(homes, projects or [], agent.uid)
        fm, fm_notes = find_fm_binary(args.fm_binary, agent, args.fm_on_path)
        docker, docker_notes = checked_docker_binary(args.docker_binary, agent)
        fm_notes += docker_notes
    with open(args.stacks_out, "w", encoding="utf-8") as fh:
        json.dump(found.stacks, fh)
    print(f"agent_user {agent.name}")
    print(f"agent_reason {agent.reason}")
    print(f"agent_explicit {'yes' if args.requested_user or args.recorded_explicit else 'no'}")
    print(f"rootless_socket {agent.rootless_socket}")
    print(f"docker_group {'add' if agent.add_to_docker_group else 'no'}")
    print(f"fm_binary {fm}")
    print(f"docker_binary {docker}")
    print(f"stack_count {len(found.stacks)}")
    print(f"fm_homes {' '.join(homes)}")
    for note in found.notes + fm_notes:
        print(f"note {note}")
    return 0


def _schema_defaults(args, **keys: str) -> None:
    """Fill the options left out (None) with the schema's default of their config key."""
    from fmappliance.config import default

    for option, key in keys.items():
        if getattr(args, option) is None:
            setattr(args, option, default(key))


def write_config(args) -> int:
    from fmappliance.installer import config_writer as cw

    _schema_defaults(
        args, backups_dir="backups.base_path", agent_socket="agent.socket", dashboard_socket="dashboard.socket"
    )

    stacks = _read_json(args.stacks) or {}
    password = cw.new_password()
    new = cw.NewConfig(
        state_dir=args.state_dir,
        backups_dir=args.backups_dir,
        agent_socket=args.agent_socket,
        dashboard_socket=args.dashboard_socket,
        agent_socket_group=args.agent_socket_group,
        dashboard_socket_group=args.dashboard_socket_group,
        download_mode=args.download_mode,
        admin_user=args.admin_user,
        fm_binary=args.fm_binary,
        proxy_secret_file=args.proxy_secret_file,
        docker_binary=args.docker_binary,
        stacks=stacks,
    )
    text = cw.render_config(new, cw.hash_admin_password(password), cw.new_secret(), cw.new_secret())
    for path, content in ((args.out, text), (args.password_out, password + "\n")):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
    return 0


#: The config values install.sh reads (``config-values``); a key the file lacks has the schema's default.
CONFIG_VALUE_KEYS = (
    "agent.port",
    "dashboard.port",
    "dashboard.listen",
    "agent.listen",
    "backups.base_path",
    "dashboard.accel_prefix",
    "dashboard.download_mode",
    "agent.socket_group",
    "agent.docker_binary",
    "agent.fm_binary",
    "dashboard.socket_group",
    "fleet.dir",
)


def runtime_dir(socket_path: str) -> str:
    """The directory of a service's socket when it is the installer's to make (without systemd) and
    to remove (uninstall): /run/fm-<name>, like the units' RuntimeDirectory=. Any other directory
    (/run itself, another program's) is the operator's: never created, chowned or removed; "" then."""
    parent, _, _ = socket_path.rpartition("/")
    name = parent.removeprefix("/run/")
    return parent if name != parent and re.fullmatch(r"fm-[a-z0-9-]+", name) else ""


def config_values(args) -> int:
    """Read leniently (a dry run may have no config yet): the schema's defaults fill what is missing."""
    from fmappliance.config import default, effective_socket

    try:
        import yaml

        with open(args.config, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except (ImportError, OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    for key in CONFIG_VALUE_KEYS:
        section, name = key.split(".")
        print(key, (data.get(section) or {}).get(name, default(key)))
    # A section naming listen or port and no socket keeps TCP (""): what the services do.
    for section in ("agent", "dashboard"):
        socket_path = effective_socket(data.get(section), default(f"{section}.socket"))
        print(f"{section}.socket", socket_path)
        print(f"{section}.runtime_dir", runtime_dir(socket_path))
    # Who may scrape /metrics through nginx: addresses and networks only (the config check refuses others).
    allowed = []
    for entry in (data.get("dashboard") or {}).get("metrics_allow") or []:
        try:
            ipaddress.ip_network(str(entry), strict=False)
        except ValueError:
            continue
        allowed.append(str(entry))
    print("dashboard.metrics_allow", " ".join(allowed))
    # Where the agent must write: backups, each FM home, each compose project dir.
    paths = [str((data.get("backups") or {}).get("base_path") or default("backups.base_path"))]
    for stack in (data.get("stacks") or {}).values():
        path = str((stack or {}).get("path", ""))
        if (stack or {}).get("type") == "fm":
            path = path.rstrip("/").rsplit("/sites/", 1)[0]
        if path and path not in paths:
            paths.append(path)
    print("rw_paths", " ".join("-" + p for p in paths))
    print("schedule_count", len(data.get("schedules") or []))
    return 0


def other_sites(args) -> int:
    from fmappliance.installer.nginx_sites import other_sites as find

    for path in find(args.nginx_dir):
        print(args.shown_as + path[len(args.nginx_dir) :] if args.shown_as else path)
    return 0


def migrate_config(args) -> int:
    from fmappliance.installer.migrate import migrate_config as migrate

    _schema_defaults(args, agent_socket="agent.socket", dashboard_socket="dashboard.socket")
    moved = migrate(
        args.config,
        {
            "agent": (args.agent_socket, args.agent_socket_group),
            "dashboard": (args.dashboard_socket, args.dashboard_socket_group),
        },
    )
    print(" ".join(moved))
    return 0


def add_dashboard_key(args) -> int:
    from fmappliance.installer.migrate import add_dashboard_key as add

    if add(args.config, args.key, args.value):
        print("added")
    return 0


def add_fleet_hub(args) -> int:
    from fmappliance.installer.migrate import add_fleet_hub as add

    if add(args.config, args.listen, args.address):
        print("added")
    return 0


def supervise(args) -> int:
    from fmappliance.installer.supervise import supervise as run

    return run(args)


def render(args) -> int:
    from fmappliance.installer.templates import TemplateError
    from fmappliance.installer.templates import render as fill

    with open(args.template, encoding="utf-8") as fh:
        template = fh.read()
    values = dict(pair.split("=", 1) for pair in args.values)
    try:
        text = fill(template, set(args.tags.split()), values, args.template)
    except TemplateError as exc:
        print(f"install.sh: {exc}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    return 0


def nginx_reload(args) -> int:
    from fmappliance.installer.nginx_reload import reload

    command = args.reload[1:] if args.reload[:1] == ["--"] else args.reload
    if not command:
        raise InstallerStop("nginx-reload needs the reload command after --")
    print(reload(command, args.pid_file, args.error_log, args.timeout))
    return 0


def healthz(args) -> int:
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(args.socket)

    conn = (
        UnixConnection("localhost", timeout=2)
        if args.socket
        else http.client.HTTPConnection("127.0.0.1", args.port, timeout=2)
    )
    try:
        conn.request("GET", "/healthz")
        return 0 if conn.getresponse().status == 200 else 1
    except OSError:
        return 1
    finally:
        conn.close()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    command = {
        "discover": discover,
        "write-config": write_config,
        "config-values": config_values,
        "other-sites": other_sites,
        "render": render,
        "healthz": healthz,
        "nginx-reload": nginx_reload,
        "migrate-config": migrate_config,
        "add-dashboard-key": add_dashboard_key,
        "add-fleet-hub": add_fleet_hub,
        "supervise": supervise,
    }[args.command]
    try:
        return command(args)
    except InstallerStop as exc:
        print(f"install.sh: {exc}", file=sys.stderr)
        return STOP_STATUS
