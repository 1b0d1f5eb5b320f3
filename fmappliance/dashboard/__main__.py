"""``python -m fmappliance.dashboard`` / ``fm-dashboard``: serve the dashboard, check the config, hash a password.

fm-dashboard --config /etc/fmappliance/config.yaml      serve (waitress)
fm-dashboard --config PATH --check-config               exit 0 when the config is usable, 2 otherwise
fm-dashboard --version
fm-dashboard hash-password                              prompt (or read one line of stdin), print a bcrypt hash
fm-dashboard --config PATH reset-2fa USER               forget USER's second factor (and end their sessions)
fm-dashboard --config PATH fleet …                      the fleet hub (fleet_cli.py)
"""

from __future__ import annotations

import logging
import sys
import types
from typing import TYPE_CHECKING, Any

from fmappliance import listening
from fmappliance.config import DEFAULT_CONFIG_PATH, ConfigError, config_path_only, load_config, secrets_of
from fmappliance.process_memory import TrimWhenIdle, limit_malloc_arenas, release_freed_memory
from fmappliance.version import __version__

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)

# Forms and JSON actions are tiny; nothing legitimate posts more.
MAX_REQUEST_BODY = 1024 * 1024
# A download relay writes faster than a client reads: waitress buffers up to the high
# watermark per connection before the relaying thread waits.  Its defaults (16 MiB, spilled
# to a temp file beyond 1 MiB) cost memory and disk writes per download; 1 MiB in memory
# keeps RSS flat and the relay fast (tests/benchmarks/bench_dashboard.py).
OUTBUF_HIGH_WATERMARK = 1024 * 1024
OUTBUF_OVERFLOW = 2 * 1024 * 1024


def _parser(fleet_command: bool = True) -> argparse.ArgumentParser:
    """``fleet_command``: the fleet sub-commands' own arguments (fleet_cli.py, loaded only to run one)."""
    import argparse

    parser = argparse.ArgumentParser(prog="fm-dashboard", description="The fmappliance browser dashboard.")
    parser.add_argument("--config", default=DEFAULT_CONFIG_PATH, help=f"config file (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit (0: usable, 2: not)")
    parser.add_argument("--version", action="version", version=f"fm-dashboard {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("hash-password", help="print the bcrypt hash of a password for dashboard.credentials")
    reset = sub.add_parser(
        "reset-2fa", help="forget a user's second sign-in factor; they set it up again at next sign-in"
    )
    reset.add_argument("user", help="a user of dashboard.credentials")
    fleet = sub.add_parser("fleet", help="the fleet hub: certificate, join tokens, servers")
    if fleet_command:
        from fmappliance.dashboard.fleet_cli import add_arguments as add_fleet_arguments

        add_fleet_arguments(fleet)
    return parser


def hash_password_command(cost: int = 12) -> int:
    import getpass

    from fmappliance.dashboard.passwords import PasswordTooLong, hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("The two passwords differ; nothing printed.", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    try:
        print(hash_password(password, cost))
    except (PasswordTooLong, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def reset_two_factor_command(config: dict, user: str) -> int:
    """Reset ``user``'s second factor in the state DB; the running dashboard sees it at once."""
    import os
    import sqlite3

    from fmappliance.config import dashboard_users
    from fmappliance.dashboard.audit import AuditLog
    from fmappliance.dashboard.second_factor import SecondFactors
    from fmappliance.dashboard.state_db import DB_FILE_NAME, StateDB

    if user not in dashboard_users(config):
        print(f"fm-dashboard: there is no user {user!r} in dashboard.credentials.", file=sys.stderr)
        return 1
    state_dir = config["dashboard"]["state_dir"]
    db_path = os.path.join(state_dir, DB_FILE_NAME)
    try:
        owner = os.stat(db_path)
    except OSError:
        print(f"fm-dashboard: {db_path} does not exist: nobody has set up a second factor yet.", file=sys.stderr)
        return 1
    if os.geteuid() == 0 and owner.st_uid != 0:
        # Run as the dashboard's user, so no file of its state dir ends up owned by root; root's
        # supplementary groups go first (setuid keeps them, and with them root's group rights).
        os.setgroups([])
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
    try:
        db = StateDB(state_dir)
        had = SecondFactors(db).reset(user)
        with db.transaction() as conn:
            ended = (
                conn.execute("DELETE FROM sessions WHERE user = ?", (user,)).rowcount
                if _has_table(conn, "sessions")
                else 0
            )
        AuditLog(db, keep_days=config["dashboard"]["audit_days"]).record(
            user="(command line)", address="", action="reset_2fa", target=user, result="ok" if had else "ok (had none)"
        )
    except (OSError, sqlite3.Error) as exc:
        print(f"fm-dashboard: cannot change {db_path}: {exc}", file=sys.stderr)
        return 1
    if had:
        print(
            f"The second factor of {user} is reset ({ended} session(s) ended); they set it up again at their next sign-in."
        )
    else:
        print(f"{user} had no second factor; {ended} session(s) ended.")
    return 0


def _has_table(conn, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


#: The header nginx adds (value from a root-only include, see packaging/nginx/fm-dashboard.conf).
PROXY_SECRET_HEADER = "HTTP_X_FMAPPLIANCE_PROXY"


class ProxySecretError(Exception):
    """dashboard.proxy_secret_file cannot be used; ``str()`` says why."""


def read_proxy_secret(path: str) -> str:
    """Read by the dashboard alone (the agent never needs it), at start."""
    try:
        with open(path, encoding="utf-8") as fh:
            secret = fh.read().strip()
    except OSError as exc:
        raise ProxySecretError(f"dashboard.proxy_secret_file: cannot read {path}: {exc.strerror}") from None
    if len(secret) < 32:
        raise ProxySecretError(f"dashboard.proxy_secret_file: {path} holds fewer than 32 characters")
    return secret


def proxy_secret_gate(app, secret: str, options: dict):
    """Trust X-Forwarded-For/-Proto (waitress's proxy handling) only on requests carrying ``secret``.

    Takes waitress's proxy options out of ``options`` and applies them here, per request; the
    secret header itself never reaches the application.
    """
    import hmac

    from waitress.proxy_headers import proxy_headers_middleware

    proxy = {
        "trusted_proxy": options.pop("trusted_proxy"),
        "trusted_proxy_count": options.pop("trusted_proxy_count"),
        "trusted_proxy_headers": set(options.pop("trusted_proxy_headers").split()),
    }
    options["clear_untrusted_proxy_headers"] = False  # done below, after the secret decided
    trusted = proxy_headers_middleware(app, clear_untrusted=True, **proxy)
    untrusted = proxy_headers_middleware(app, trusted_proxy=None, clear_untrusted=True)
    expected = secret.encode()

    def gate(environ, start_response):
        given = environ.pop(PROXY_SECRET_HEADER, "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return trusted(environ, start_response)
        return untrusted(environ, start_response)

    return gate


def serve(config: dict) -> None:
    import waitress

    from fmappliance.dashboard.app import make_app
    from fmappliance.dashboard.services import build_services

    dash = config["dashboard"]
    limit_malloc_arenas()
    services = build_services(config)
    scheduler = services.scheduler
    hub = fleet_events = None
    if config["fleet"]["listen"]:
        # The fleet hub (docs/fleet.md); without fleet.listen nothing of the fleet runs.
        from fmappliance.dashboard.fleet_client import start_hub

        hub, registry = start_hub(config, services.db)
        from fmappliance.dashboard.fleet_client import FleetView

        view = FleetView(hub, registry, config, local_agent=services.agent)
        services.fleet_view = view  # type: ignore[attr-defined]
        from fmappliance.dashboard.fleet_events import FleetEvents
        from fmappliance.dashboard.notifications import Notifier

        fleet_events = FleetEvents(view, Notifier(config["notifications"]), config)
        if scheduler.sync is not None:
            # Each server's own schedules through its own link (fleet_schedules.py).
            from fmappliance.dashboard.fleet_schedules import FleetSchedules

            fleet_schedules = FleetSchedules(scheduler.sync, view)
            scheduler.fleet = fleet_schedules
            scheduler.fleet_syncs = fleet_schedules.syncs
    # A burst of big pages (150 sites: 300 KB each) leaves MBs in glibc's heap: hand them back once idle.
    app = TrimWhenIdle(make_app(config, services=services))
    options = {
        **listening.listen_options(dash),
        "threads": dash["threads"],
        "max_request_body_size": MAX_REQUEST_BODY,
        "ident": "fm-dashboard",
        "clear_untrusted_proxy_headers": True,
        "outbuf_high_watermark": OUTBUF_HIGH_WATERMARK,
        "outbuf_overflow": OUTBUF_OVERFLOW,
        "asyncore_use_poll": True,
        # Lets a relayed log stream notice at once that the browser left (waitress.client_disconnected).
        "channel_request_lookahead": 1,
    }
    if dash["trusted_proxy"]:
        # Only nginx may tell us the real client and scheme (docs/pitfalls.md, waitress): on TCP the
        # configured address; on the socket its peer (waitress calls it "localhost"), which only
        # members of socket_group (nginx) can be.
        options.update(
            trusted_proxy="localhost" if dash["socket"] else dash["trusted_proxy"],
            trusted_proxy_headers="x-forwarded-for x-forwarded-proto",
            trusted_proxy_count=1,
        )
    if dash["trusted_proxy"] and dash["proxy_secret_file"]:
        # Every member of socket_group (all of nginx's user's processes: other sites, PHP-FPM) can
        # open the socket: the forwarding headers count only with nginx's secret header as well.
        app = proxy_secret_gate(app, read_proxy_secret(dash["proxy_secret_file"]), options)
    server = waitress.create_server(app, **options)
    listening.share_socket(dash)

    listening.stop_on_signals(log)
    # effective_port: the one the kernel picked when the config says 0.
    where = listening.where(dash) if dash["socket"] else f"{dash['listen']}:{server.effective_port}"
    log.info("dashboard %s listening on %s (agent %s)", __version__, where, services.agent.where)
    try:
        # Only this (serving) process pushes schedules to the agent and notifies their outcomes.
        scheduler.start()
        services.job_watch.start()
        if fleet_events is not None:
            fleet_events.start()
        release_freed_memory()
        server.run()
    finally:
        services.job_watch.stop()
        scheduler.stop()
        if fleet_events is not None:
            fleet_events.stop()
        if hub is not None:
            hub.stop()
        server.close()
    log.info("stopped")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config_path = config_path_only(argv)  # the service's own start: no argparse kept in memory
    if config_path is not None:
        args: Any = types.SimpleNamespace(command=None, config=config_path, check_config=False)
    else:
        args = _parser(fleet_command="fleet" in argv).parse_args(argv)
    if args.command == "hash-password":
        return hash_password_command()
    try:
        # Only the agent reads the offsite credentials: the internet-facing dashboard never holds them.
        config = load_config(args.config, offsite_credentials=False)
    except ConfigError as exc:
        print(f"fm-dashboard: {exc}", file=sys.stderr)
        return 2
    if args.command == "reset-2fa":
        return reset_two_factor_command(config, args.user)
    if args.command == "fleet":
        from fmappliance.dashboard.fleet_cli import run as fleet_command

        return fleet_command(config, args)
    if args.check_config:
        print(f"{args.config}: OK ({len(config['stacks'])} stacks, {len(config['dashboard']['credentials'])} users)")
        return 0
    from fmappliance.logsetup import setup_logging

    setup_logging(secrets_of(config))
    import sqlite3

    try:
        serve(config)
    except ProxySecretError as exc:
        print(f"fm-dashboard: {exc}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        dash = config["dashboard"]
        # A port in use or an unwritable state dir: say which, no traceback.
        print(
            f"fm-dashboard: cannot start (listen {listening.where(dash)}, state_dir {dash['state_dir']}): {exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
