"""The one config schema: every key of config.yaml, its type, default and help.

The schema drives loading, validation (the machinery is in config_kit.py), the example config
(packaging/config.example.yaml) and the README's reference (config_docs.py), and a test that
fails when a key is undocumented.  Nothing else in the code base knows which keys exist.

``load_config(path)`` returns plain nested dicts with every default filled in::

    config["agent"]["port"]                 -> 9100
    config["stacks"]["prod"]["type"]        -> "compose"
    config["security"]["token"]             -> the token (read from token_file if given)

Errors raise ``ConfigError`` whose text is one line naming the file, the key, the YAML
line where there is one, and what is expected.  Secret values never appear in it.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

from fmappliance.actions_table import (
    ACTIONS,
    DEFAULT_ACTION_TIMEOUTS,
    DEFAULT_ALLOWED_ACTIONS,
    FAILED_JOB_EVENTS,
    OFFSITE_ACTIONS,
)
from fmappliance.config_kit import ConfigError, Key, ListOf, Located, MapOf, Section, Validator, parse_yaml
from fmappliance.wire import STACK_NAME_RULE, is_valid_site_name, is_valid_stack_name

DEFAULT_CONFIG_PATH = "/etc/fmappliance/config.yaml"


def config_path_only(argv: list[str]) -> str | None:
    """The config file when ``argv`` names nothing else (``[]``, ``--config P``, ``--config=P``), else None.

    That is how systemd starts both services; they then skip argparse, which with gettext and
    locale would stay resident (about 0.3 MB) for a command line read once.  Any other command
    line goes through the service's full parser (help, sub-commands, errors).
    """
    if not argv:
        return DEFAULT_CONFIG_PATH
    if len(argv) == 2 and argv[0] == "--config" and argv[1] and not argv[1].startswith("-"):
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--config=") and len(argv[0]) > len("--config="):
        return argv[0][len("--config=") :]
    return None


# Every action, its allow-list default and its timeout are rows of fmappliance/actions_table.py.
# FAILED_JOB_EVENTS: failed agent jobs the dashboard notifies, whoever started them (each action's failure_event).
#: The fleet's events (dashboard/fleet_events.py): a server's link lost and back, its clock, joins and removals.
SERVER_EVENTS = ("server_unreachable", "server_back", "server_clock_skew", "server_joined", "server_removed")
NOTIFICATION_EVENTS = ("backup_failed", "backup_missed", "weekly_summary", *FAILED_JOB_EVENTS, *SERVER_EVENTS)
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
MIN_TOKEN_LENGTH = 32
#: Dashboard roles, least to most privileged.
ROLES = ("viewer", "operator", "admin")
TOTP_MODES = ("required", "optional", "off")
DEFAULT_AGENT_SOCKET = "/run/fm-agent/agent.sock"
DEFAULT_DASHBOARD_SOCKET = "/run/fm-dashboard/dashboard.sock"


def _port(v):
    return None if 1 <= v <= 65535 else "expected a port number from 1 to 65535"


def _listen_port(v):
    return None if 0 <= v <= 65535 else "expected a port number from 1 to 65535 (or 0: any free port)"


def _positive(v):
    return None if v > 0 else "expected a number greater than 0"


def _non_negative(v):
    return None if v >= 0 else "expected 0 or a positive number"


def _one_of(*choices):
    def check(v):
        return None if v in choices else "expected one of: " + ", ".join(choices)

    return check


def _actions(v):
    unknown = [a for a in v if a not in ACTIONS]
    if unknown:
        return f"unknown action {unknown[0]!r}; expected any of: " + ", ".join(ACTIONS)
    return None


def _timeouts(v):
    for action, seconds in v.items():
        if action not in ACTIONS:
            return f"unknown action {action!r}; expected any of: " + ", ".join(ACTIONS)
        if seconds <= 0:
            return f"timeout for {action} must be a positive number of seconds"
    return None


def _token(v):
    if len(v) < MIN_TOKEN_LENGTH:
        return f"expected a random token of at least {MIN_TOKEN_LENGTH} characters"
    return None


_SERVER_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _server_roles_problem(entry: dict) -> str | None:
    """``servers: [..]`` (with ``role``) or ``roles: {"*"|server: role}``: which servers a user may reach."""
    if "roles" in entry and ("servers" in entry or "role" in entry):
        return "give either roles (a role per server) or role with servers, not both"
    servers = entry.get("servers")
    if servers is not None:
        if not isinstance(servers, list) or not servers:
            return "servers must be a non-empty list of fleet server names"
        for name in servers:
            if not isinstance(name, str) or not (_SERVER_NAME.fullmatch(name) or name == "*"):
                return f"servers: {name!r} is not a server name (lowercase letters, digits, '-'; or '*')"
    roles = entry.get("roles")
    if roles is not None:
        if not isinstance(roles, dict) or not roles:
            return 'roles must map server names (or "*" for every other server) to a role'
        for name, role in roles.items():
            if not isinstance(name, str) or not (_SERVER_NAME.fullmatch(name) or name == "*"):
                return f"roles: {name!r} is not a server name (lowercase letters, digits, '-'; or '*')"
            if role not in ROLES:
                return f"roles: the role for {name} must be one of: " + ", ".join(ROLES)
    return None


def _credentials(v):
    for user, entry in v.items():
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", str(user)):
            return f"user name {user!r} may only use letters, digits, '.', '_', '@', '-' (at most 64)"
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"password", "role", "servers", "roles"})
            if unknown:
                return f"user {user!r}: unknown key {unknown[0]!r}; expected password, role, servers or roles"
            if entry.get("role", "admin") not in ROLES:
                return f"user {user!r}: role must be one of: " + ", ".join(ROLES)
            problem = _server_roles_problem(entry)
            if problem:
                return f"user {user!r}: {problem}"
            hashed = entry.get("password")
        else:
            hashed = entry
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            return (
                f"the password of {user!r} must be a bcrypt hash ($2b$...), not a plain password; "
                "make one with: fm-dashboard hash-password"
            )
    return None


def _totp_mode(v):
    # YAML reads a bare `off` as false; the operator meant the word.
    return "off" if v is False else v


def _url(v):
    return None if re.match(r"^https?://[^\s/]+", v) else "expected an http:// or https:// URL"


def _time_hhmm(v):
    return None if re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v) else "expected a time HH:MM (24 h)"


def _day_of_month(v):
    return None if 1 <= v <= 28 else "expected a day of month from 1 to 28"


def _networks(v):
    import ipaddress

    for entry in v:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 192.168.1.0/24)"
    return None


def _site_or_all(v):
    return None if v == "*" or is_valid_site_name(v) else "expected a site name or '*' for every site"


AGENT = Section(
    "agent",
    help="The privileged agent: runs the allow-listed operations.",
    keys=(
        Key(
            "socket",
            "str",
            DEFAULT_AGENT_SOCKET,
            "Unix socket the agent listens on (mode 0660, group socket_group); empty: TCP on listen/port. "
            "A config that sets listen or port and no socket keeps TCP.",
        ),
        Key(
            "socket_group",
            "str",
            "",
            "Group of the agent's socket; the dashboard's user must be in it (empty: the agent user's own group).",
        ),
        Key("listen", "str", "127.0.0.1", "Address the agent binds to when it has no socket. Keep it on loopback."),
        Key(
            "port",
            "int",
            9100,
            "TCP port of the agent when it has no socket (0: any free port, named in the 'listening on' log line).",
            check=_listen_port,
        ),
        Key("state_dir", "path", "/var/lib/fmappliance/agent", "Job store (SQLite) and locks."),
        Key(
            "action_timeouts",
            "int_map",
            DEFAULT_ACTION_TIMEOUTS,
            "Seconds an action may run before its process group is killed; missing actions keep their default.",
            check=_timeouts,
        ),
        Key("fm_binary", "str", "fm", "The Frappe Manager command (looked up on PATH unless absolute)."),
        Key("docker_binary", "str", "docker", "The docker command (looked up on PATH unless absolute)."),
        Key(
            "status_cache_seconds",
            "int",
            5,
            "How long a stack's status is reused before asking docker again.",
            check=_non_negative,
        ),
        Key(
            "status_timeout",
            "int",
            20,
            "Seconds one `docker compose ps` may take before the stack shows as unknown.",
            check=_positive,
        ),
        Key(
            "threads",
            "int",
            40,
            "Request threads (each download, also one relayed by the dashboard, holds one).",
            check=_positive,
        ),
        Key(
            "max_log_streams",
            "int",
            8,
            "Followed service logs streamed at once (each holds a request thread and a `docker compose logs`); "
            "beyond this the agent answers 429.",
            check=_positive,
        ),
    ),
)

SECURITY = Section(
    "security",
    help="Who may talk to the agent and what it may do.",
    required=True,
    keys=(
        Key(
            "token",
            "secret",
            None,
            "Bearer token shared by agent and dashboard (at least 32 random characters).",
            check=_token,
            example="CHANGE-ME-to-at-least-32-random-characters",
        ),
        Key("token_file", "path", None, "Alternative to token: a file (mode 0600) holding the token."),
        Key(
            "allowed_actions",
            "str_list",
            DEFAULT_ALLOWED_ACTIONS,
            "Actions the agent accepts; others answer 403.",
            check=_actions,
        ),
        Key(
            "fleet_allowed_actions",
            "str_list",
            None,
            "Actions this server accepts from a fleet dashboard (its per-server token); set only here, never "
            "widened from the dashboard (default: allowed_actions).",
            check=_actions,
        ),
    ),
)

STACK = Section(
    "stack",
    help="One stack.",
    keys=(
        Key(
            "type",
            "str",
            None,
            "compose (a frappe_docker project) or fm (one Frappe Manager bench).",
            required=True,
            check=_one_of("compose", "fm"),
        ),
        Key(
            "path",
            "path",
            None,
            "compose: the dir holding the compose file(s); fm: the bench dir <FM home>/sites/<bench>.",
            required=True,
        ),
        Key("project", "str", None, "compose: the project name (default: compose's own, from the dir name)."),
        Key("files", "str_list", [], "compose: compose files relative to path (default: compose's own lookup)."),
        Key("service", "str", "backend", "compose: the service that runs bench."),
        Key(
            "db_service",
            "str",
            "db",
            "compose: the MariaDB service; a restore reads its root password there (never passed on).",
        ),
        Key("sites", "str_list", [], "compose: the sites, when they should not be listed from the backend container."),
    ),
)

BACKUPS = Section(
    "backups",
    help="Where verified backups are published and how many are kept.",
    keys=(
        Key("base_path", "path", "/var/backups/fmappliance", "Backups go to <base_path>/<stack>/<site>/."),
        Key(
            "retention",
            "int_map",
            {"daily": 7, "weekly": 4, "monthly": 12, "keep_last": 3},
            "Grandfather-father-son: how many daily, weekly and monthly backups to keep; keep_last: the newest N are "
            "always kept, whatever the tiers say.",
            check=lambda v: (
                next(
                    (
                        f"unknown retention setting {k!r}; expected daily, weekly, monthly, keep_last"
                        for k in v
                        if k not in ("daily", "weekly", "monthly", "keep_last")
                    ),
                    None,
                )
                or next((f"retention.{k} must be 0 or more" for k, n in v.items() if n < 0), None)
            ),
        ),
        Key(
            "keep_safety_days",
            "int",
            14,
            "Backups labelled manual, pre-update, pre-restore or imported (and unlabelled ones from before labels existed) "
            "are kept at least this many days, whatever the retention tiers say.",
            check=_non_negative,
        ),
    ),
)

DASHBOARD = Section(
    "dashboard",
    help="The browser UI.",
    required=True,
    keys=(
        Key(
            "socket",
            "str",
            DEFAULT_DASHBOARD_SOCKET,
            "Unix socket the dashboard listens on (mode 0660, group socket_group; nginx proxies to it); "
            "empty: TCP on listen/port. A config that sets listen or port and no socket keeps TCP.",
        ),
        Key(
            "socket_group",
            "str",
            "",
            "Group of the dashboard's socket; nginx's user must be in it (empty: the dashboard user's own group).",
        ),
        Key(
            "listen", "str", "127.0.0.1", "Address the dashboard binds to when it has no socket (nginx proxies to it)."
        ),
        Key(
            "port",
            "int",
            8000,
            "TCP port of the dashboard when it has no socket (0: any free port, named in the 'listening on' log line).",
            check=_listen_port,
        ),
        Key("state_dir", "path", "/var/lib/fmappliance/dashboard", "Sessions, schedules and the audit log (SQLite)."),
        Key(
            "secret_key",
            "secret",
            None,
            "Random secret (at least 32 characters) for CSRF tokens.",
            required=True,
            check=_token,
            example="CHANGE-ME-to-at-least-32-random-characters",
        ),
        Key(
            "agent_url",
            "str",
            "http://127.0.0.1:9100",
            "Where the agent listens when agent.socket is empty.",
            check=_url,
        ),
        Key("session_idle_minutes", "int", 30, "Sign out after this many idle minutes.", check=_positive),
        Key("session_max_hours", "int", 12, "Sign out after this many hours whatever the activity.", check=_positive),
        Key(
            "credentials",
            "user_map",
            None,
            "user: bcrypt hash (an admin), or user: {password: bcrypt hash, role: viewer, operator or admin}. "
            "In a fleet, per server: add servers: [local, erp-b] (role on those servers only), or give "
            'roles: {"*": viewer, erp-b: operator} instead of role ("*": every server not named). '
            "Make a hash with `fm-dashboard hash-password`.",
            required=True,
            check=_credentials,
            example={"admin": "$2b$12$REPLACE.with.the.output.of.hash.password.command.xxxxx"},
        ),
        Key(
            "totp",
            "str",
            "required",
            "Second sign-in factor (TOTP authenticator app): required (everyone enrolls at first sign-in), "
            "optional (users may enroll from /account) or off.",
            check=_one_of(*TOTP_MODES),
            coerce=_totp_mode,
        ),
        Key(
            "viewer_logs",
            "bool",
            False,
            "Let viewers follow live service logs (false: operators and admins only; a frontend's log can show "
            "password-reset links and session ids even after redaction).",
        ),
        Key("audit_days", "int", 365, "Audit log rows older than this many days are deleted.", check=_positive),
        Key(
            "secure_cookies",
            "str",
            "auto",
            "Secure flag on the session cookie: auto (when the request came over HTTPS), always, never.",
            check=_one_of("auto", "always", "never"),
        ),
        Key(
            "trusted_proxy",
            "str",
            "127.0.0.1",
            "On TCP: address of the reverse proxy whose X-Forwarded-For/-Proto are trusted (empty: none). "
            "On the socket only its peer (nginx) is trusted, unless this is empty.",
        ),
        Key(
            "proxy_secret_file",
            "path",
            None,
            "A file (read by the dashboard only) holding the secret nginx sends as X-Fmappliance-Proxy; with it, "
            "X-Forwarded-For/-Proto count only on requests that carry it. install.sh writes it and nginx's "
            "root-only include /etc/nginx/fmappliance-proxy-secret.conf.",
            example="/etc/fmappliance/proxy-secret",
        ),
        Key("threads", "int", 32, "Request threads (each download holds one).", check=_positive),
        Key(
            "download_mode",
            "str",
            "stream",
            "stream (the dashboard relays the file) or accel (nginx sends it via X-Accel-Redirect).",
            check=_one_of("stream", "accel"),
        ),
        Key(
            "accel_prefix",
            "str",
            "/_protected_backups/",
            "With download_mode accel: the internal nginx location that maps to backups.base_path.",
        ),
        Key("agent_timeout", "int", 10, "Seconds to wait for the agent on page requests.", check=_positive),
        Key(
            "metrics_token_file",
            "path",
            None,
            "A file (mode 0600 or 0640) holding the token Prometheus sends to GET /metrics as 'Authorization: Bearer <token>' (at least 32 characters). Unset, or the file missing: /metrics answers 404.",
            example="/etc/fmappliance/metrics.token",
        ),
        Key(
            "metrics_allow",
            "str_list",
            [],
            "Addresses or networks nginx lets reach /metrics (e.g. [10.0.0.5, 192.168.1.0/24]); empty: nobody. Applied by install.sh.",
            check=_networks,
        ),
    ),
)

SCHEDULER = Section(
    "scheduler",
    help="How the agent runs the schedules the dashboard pushes to it.",
    keys=(
        Key(
            "catchup_hours",
            "int",
            6,
            "A run missed while the agent was down is made up when it is back if it is at most this old (sent to the agent with the schedules).",
            check=_non_negative,
        ),
    ),
)

SCHEDULE = Section(
    "schedule",
    help="A backup or test-restore schedule declared in the config (shown in the UI, not removable there).",
    keys=(
        Key(
            "kind",
            "str",
            "backup",
            "backup, or test_restore: restore the newest verified local backup into a throwaway site to prove it.",
            check=_one_of("backup", "test_restore"),
        ),
        Key(
            "stack",
            "str",
            None,
            "Stack name.",
            required=True,
            check=lambda v: None if is_valid_stack_name(v) else STACK_NAME_RULE,
        ),
        Key("site", "str", "*", "Site name, or * for every site of the stack.", check=_site_or_all),
        Key("frequency", "str", "daily", "daily, weekly or monthly.", check=_one_of("daily", "weekly", "monthly")),
        Key("time", "str", "02:00", "Time of day, HH:MM (24 h), in the schedule's time zone.", check=_time_hhmm),
        Key(
            "day_of_week",
            "str",
            "sun",
            "weekly: mon .. sun.",
            check=_one_of("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
        ),
        Key("day_of_month", "int", 1, "monthly: 1 .. 28.", check=_day_of_month),
        Key("timezone", "str", "", "IANA time zone name (empty: the server's)."),
        Key("enabled", "bool", True, "Whether the schedule runs."),
        Key(
            "server",
            "str",
            "",
            "The fleet server whose agent runs it (empty: the dashboard's own server, fleet.local_name).",
            check=lambda v: (
                None
                if v == "" or _SERVER_NAME.fullmatch(v)
                else "expected a fleet server name (lowercase letters, digits, '-', at most 32)"
            ),
        ),
    ),
)

SMTP = Section(
    "smtp",
    help="Mail server for notifications (leave host empty to send no mail).",
    keys=(
        Key("host", "str", "", "SMTP host."),
        Key("port", "int", 587, "SMTP port.", check=_port),
        Key("starttls", "bool", True, "Use STARTTLS."),
        Key("username", "str", "", "SMTP user (empty: no login)."),
        Key("password_file", "path", None, "File holding the SMTP password."),
        Key("from", "str", "fmappliance@localhost", "Sender address."),
        Key("to", "str_list", [], "Recipients."),
    ),
)

NOTIFICATIONS = Section(
    "notifications",
    help="Where failures are reported.",
    keys=(
        Key(
            "webhook_url",
            "str",
            "",
            "JSON POST target for events (empty: none).",
            check=lambda v: None if v == "" else _url(v),
        ),
        SMTP,
        Key(
            "events",
            "str_list",
            ["backup_failed", "backup_missed", *FAILED_JOB_EVENTS],
            "Events to send: "
            + ", ".join(NOTIFICATION_EVENTS)
            + " (the *_failed events of restore, restore test, update "
            "and offsite jobs are sent whoever started the job).",
            check=lambda v: next(
                (
                    f"unknown event {e!r}; expected any of: " + ", ".join(NOTIFICATION_EVENTS)
                    for e in v
                    if e not in NOTIFICATION_EVENTS
                ),
                None,
            ),
        ),
    ),
)

OFFSITE = Section(
    "offsite",
    help="Offsite copies of every verified backup with restic (no repository: no offsite copies).",
    keys=(
        Key(
            "repository",
            "str",
            "",
            "Any restic repository (s3:https://s3.example.com/my-bucket/fmappliance, sftp:, rest:, b2:, a path); "
            "empty: no offsite copies.",
        ),
        Key(
            "password_file",
            "path",
            None,
            "The restic repository password (mode 0600 or 0400). Keep a copy elsewhere: without it the copies are useless.",
            example="/etc/fmappliance/offsite.password",
        ),
        Key(
            "env_file",
            "path",
            None,
            "Optional KEY=value lines for restic's environment (AWS_ACCESS_KEY_ID=..., AWS_SECRET_ACCESS_KEY=..., "
            "AWS_DEFAULT_REGION=...), mode 0600 or 0400.",
        ),
        Key("options", "str_list", [], "restic -o options, e.g. s3.bucket-lookup=path."),
        Key(
            "retention",
            "int_map",
            {},
            "Offsite daily/weekly/monthly/keep_last, applied per site with forget --prune (empty: backups.retention).",
            check=lambda v: next(
                (
                    f"unknown retention setting {k!r}; expected daily, weekly, monthly, keep_last"
                    for k in v
                    if k not in ("daily", "weekly", "monthly", "keep_last")
                ),
                None,
            ),
        ),
        Key(
            "check_subset",
            "str",
            "5%",
            "What the weekly `restic check --read-data-subset` reads (rotating n/N when a %).",
        ),
        Key("limit_upload_kbps", "int", 0, "restic --limit-upload in KiB/s; 0: no limit.", check=_non_negative),
        Key("restic_binary", "str", "restic", "The restic command (looked up on PATH unless absolute)."),
        Key(
            "host",
            "str",
            "",
            "restic --host of the copies this server makes; listing, retention and restores see only this "
            "host's copies, so servers sharing a repository never prune each other's. Empty: the fleet "
            "server name once joined (fleet.json), else fmappliance (copies made before joining stay under it).",
            check=lambda v: (
                None
                if v == "" or _SERVER_NAME.fullmatch(v) or v == "fmappliance"
                else "expected a server name (lowercase letters, digits, '-', at most 32)"
            ),
        ),
    ),
)

FLEET = Section(
    "fleet",
    help="One dashboard, many servers (docs/fleet.md). Without fleet.listen the dashboard runs no hub and "
    "everything is the single-server appliance.",
    keys=(
        Key(
            "listen",
            "str",
            "",
            "Dashboard: HOST:PORT of the fleet hub (TLS 1.3) that managed servers dial out to; empty: no hub.",
            check=lambda v: None if v == "" or _host_port(v) else "expected HOST:PORT, e.g. 0.0.0.0:9443",
        ),
        Key(
            "address",
            "str",
            "",
            "Dashboard: HOST:PORT the managed servers use to reach the hub (printed in the join command).",
            check=lambda v: None if v == "" or _host_port(v) else "expected HOST:PORT, e.g. dash.example.com:9443",
        ),
        Key("local_name", "str", "local", "Dashboard: the name of this (the dashboard's own) server in the fleet."),
        Key(
            "dir",
            "path",
            "/etc/fmappliance/fleet",
            "Both sides: the hub's key and certificate (dashboard) or the uplink's files (managed server).",
        ),
        Key(
            "allow_from",
            "str_list",
            [],
            "Dashboard: addresses or networks that may connect to the hub (empty: any).",
            check=_networks,
        ),
        Key("max_servers", "int", 50, "Dashboard: the most servers the fleet takes.", check=_positive),
        Key("join_token_ttl", "int", 3600, "Dashboard: seconds a join token stays usable.", check=_positive),
        Key(
            "unreachable_after",
            "int",
            30,
            "Dashboard: seconds without a link before a server shows unreachable.",
            check=_positive,
        ),
        Key(
            "notify_unreachable_after",
            "int",
            300,
            "Dashboard: seconds unreachable before server_unreachable is sent.",
            check=_positive,
        ),
        Key(
            "request_timeout",
            "int",
            10,
            "Dashboard: seconds a request through a server's link may take.",
            check=_positive,
        ),
        Key(
            "max_clock_skew",
            "int",
            120,
            "Dashboard: seconds of clock difference before a server shows a clock warning.",
            check=_positive,
        ),
    ),
)


def _host_port(v: str) -> bool:
    host, sep, port = v.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


SCHEMA = (
    AGENT,
    SECURITY,
    MapOf(
        "stacks",
        STACK,
        name_check=lambda n: None if is_valid_stack_name(n) else STACK_NAME_RULE,
        help="The stacks the appliance operates, by name.",
        required=True,
        example={
            "prod": {"type": "compose", "path": "/opt/frappe_docker"},
            "erp": {"type": "fm", "path": "/home/frappe/frappe/sites/erp.example.com"},
        },
    ),
    BACKUPS,
    DASHBOARD,
    SCHEDULER,
    ListOf(
        "schedules",
        SCHEDULE,
        help="Backup and test-restore schedules declared here (more can be added in the UI).",
        example=[{"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00"}],
    ),
    NOTIFICATIONS,
    OFFSITE,
    FLEET,
)


def default(dotted: str) -> Any:
    """The schema's default of one key, e.g. ``default("agent.socket")``: for code that needs a
    value before (or without) a validated config, such as the installer, so no default is copied.

    A name that is no key of the schema (or a section, or inside ``stacks``/``schedules``, whose
    entries have no single default) raises KeyError naming it.
    """
    specs: tuple = SCHEMA
    *sections, last = dotted.split(".")
    for name in sections:
        spec = next((s for s in specs if s.name == name), None)
        if not isinstance(spec, Section):
            raise KeyError(f"{dotted}: {name} is not a section of the config")
        specs = spec.keys
    key = next((k for k in specs if k.name == last), None)
    if not isinstance(key, Key):
        raise KeyError(f"{dotted}: no such key in the config")
    return copy.deepcopy(key.default)


def validate(data: Any, located: Located | None = None, *, offsite_credentials: bool = True) -> dict:
    """Check parsed YAML against the schema; return the full config with defaults.

    ``offsite_credentials``: read and check the offsite password and env files (the agent);
    the dashboard passes False and learns only that offsite is configured.
    """
    located = located or Located()
    v = Validator(located)
    if not isinstance(data, dict):
        raise ConfigError("the file must be a mapping of sections (agent:, security:, stacks:, ...)")
    known = [s.name for s in SCHEMA]
    for name in data:
        if name not in known:
            v.fail((name,), "unknown section; expected one of: " + ", ".join(known))
    config: dict = {}
    for spec in SCHEMA:
        raw = data.get(spec.name)
        if isinstance(spec, Section):
            config[spec.name] = v.section(spec, raw, (spec.name,))
        elif isinstance(spec, MapOf):
            config[spec.name] = v.map_of(spec, raw, (spec.name,))
        else:
            config[spec.name] = v.list_of(spec, raw, (spec.name,))
    _cross_checks(config, v, data, offsite_credentials=offsite_credentials)
    return config


def effective_socket(raw_section: Any, default: str) -> str:
    """The socket a section listens on: an explicit ``socket``, else "" (TCP) when it sets
    ``listen`` or ``port`` (configs older than sockets keep working), else the default."""
    raw_section = raw_section if isinstance(raw_section, dict) else {}
    if raw_section.get("socket") is not None:
        return str(raw_section["socket"])
    if "listen" in raw_section or "port" in raw_section:
        return ""
    return default


def _cross_checks(config: dict, v: Validator, data: dict, *, offsite_credentials: bool = True) -> None:
    for name, default in (("agent", DEFAULT_AGENT_SOCKET), ("dashboard", DEFAULT_DASHBOARD_SOCKET)):
        socket_path = config[name]["socket"] = effective_socket(data.get(name), default)
        if socket_path and not socket_path.startswith("/"):
            v.fail((name, "socket"), f"expected an absolute path, got {socket_path!r}")
    sec = config["security"]
    if sec["token"] and sec["token_file"]:
        v.fail(("security", "token_file"), "give either token or token_file, not both")
    if not sec["token"] and not sec["token_file"]:
        v.fail(("security",), "needs token (at least 32 random characters) or token_file")
    if sec["token_file"]:
        sec["token"] = _read_secret_file(sec["token_file"], ("security", "token_file"), v)
        problem = _token(sec["token"])
        if problem:
            v.fail(("security", "token_file"), f"the file's token is too short: {problem}")
    for name, stack in config["stacks"].items():
        path = Path(stack["path"])
        if not path.is_absolute():
            v.fail(("stacks", name, "path"), f"expected an absolute path, got {stack['path']!r}")
        if not path.is_dir():
            v.fail(("stacks", name, "path"), f"directory {stack['path']} does not exist")
        for site in stack["sites"]:
            if not is_valid_site_name(site):
                v.fail(("stacks", name, "sites"), f"bad site name {site!r}")
        if stack["type"] == "fm" and (stack["project"] or stack["files"] or stack["sites"]):
            v.fail(("stacks", name), "project, files and sites are for compose stacks; an fm bench knows its own")
    for i, schedule in enumerate(config["schedules"]):
        # A schedule naming a stack that is not (or no longer) configured is not an error here:
        # the scheduler shows it as broken.
        if schedule["timezone"]:
            from zoneinfo import ZoneInfo

            try:
                ZoneInfo(schedule["timezone"])
            except Exception:
                v.fail(
                    ("schedules", i, "timezone"),
                    f"unknown time zone {schedule['timezone']!r}; expected an IANA name like Europe/Berlin",
                )
    # derived: the server a notification is about when it names none (the dashboard's own)
    config["notifications"]["server"] = config["fleet"]["local_name"]
    dash = config["dashboard"]
    dash["metrics_token"] = None  # derived: the scrape token, or None while /metrics is off
    if dash["metrics_token_file"] and os.path.exists(dash["metrics_token_file"]):
        dash["metrics_token"] = _read_secret_file(dash["metrics_token_file"], ("dashboard", "metrics_token_file"), v)
        problem = _token(dash["metrics_token"])
        if problem:
            v.fail(("dashboard", "metrics_token_file"), f"the file's token is too short: {problem}")
    _check_offsite(config, v, data, offsite_credentials)
    if sec["fleet_allowed_actions"] is None:
        # derived: what the fleet may do defaults to what the local dashboard may (after offsite widened it)
        sec["fleet_allowed_actions"] = list(sec["allowed_actions"])
    smtp_pw = config["notifications"]["smtp"]["password_file"]
    if smtp_pw and not os.path.isfile(smtp_pw):
        v.fail(("notifications", "smtp", "password_file"), f"file {smtp_pw} does not exist")


def _check_offsite(config: dict, v: Validator, data: dict, credentials: bool = True) -> None:
    """An offsite section needs a private password file (and env file) and restic; it adds the offsite actions.

    Only the agent (``credentials``) looks at the files and restic: the internet-facing dashboard
    must never hold the repository's keys, and cannot read the agent's 0600 files anyway (issue 21.5).
    """
    off = config["offsite"]
    off["enabled"] = bool(off["repository"])  # derived
    off["env"] = {}
    if not off["enabled"]:
        return
    if not off["retention"]:
        off["retention"] = dict(config["backups"]["retention"])
    if not off["password_file"]:
        v.fail(("offsite", "password_file"), "needs the file holding the restic repository password")
    if "allowed_actions" not in (data.get("security") or {}):
        config["security"]["allowed_actions"] = [*config["security"]["allowed_actions"], *OFFSITE_ACTIONS]
    if not credentials:
        return
    for key in ("password_file", "env_file"):
        path = off[key]
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            v.fail(("offsite", key), f"cannot read {path}: {exc.strerror}")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            v.fail(("offsite", key), f"{path} must not be readable by group or others (chmod 0600)")
    if off["env_file"]:
        try:
            off["env"] = read_env_file(off["env_file"])
        except ValueError as exc:
            v.fail(("offsite", "env_file"), str(exc))
        except OSError as exc:
            v.fail(("offsite", "env_file"), f"cannot read {off['env_file']}: {exc.strerror}")
    binary = off["restic_binary"]
    found = shutil.which(binary) if not os.path.isabs(binary) else (binary if os.access(binary, os.X_OK) else None)
    if not found:
        v.fail(("offsite", "restic_binary"), f"restic was not found ({binary}); install the restic package")


def read_env_file(path: str) -> dict[str, str]:
    """KEY=value lines (blank lines and # comments skipped); raises ValueError naming the bad line, never its value."""
    env: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            key = key.strip()
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise ValueError(f"{path} line {number} is not KEY=value")
            env[key] = value.strip().strip('"').strip("'")
    return env


def _read_secret_file(path: str, key_path: tuple, v: Validator) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except OSError as exc:
        v.fail(key_path, f"cannot read {path}: {exc.strerror}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        v.fail(key_path, f"{path} must not be writable or readable by others (chmod 0600 or 0640)")
    return text


def load_config(path: str | os.PathLike, *, offsite_credentials: bool = True) -> dict:
    """Read, validate and return the config; raise ConfigError naming the file.

    The dashboard passes ``offsite_credentials=False``: see :func:`validate`.
    """
    path = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data, located = parse_yaml(text)
        return validate(data, located, offsite_credentials=offsite_credentials)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dashboard_users(config: dict) -> dict[str, tuple[str, str]]:
    """user -> (bcrypt hash, role) from ``dashboard.credentials`` (a bare hash means admin).

    The role is the one on the dashboard's own server (``fleet.local_name``); a user with roles
    on other servers only is a viewer here (the pages every server shares: account, audit, fleet).
    """
    local = config.get("fleet", {}).get("local_name", "local")
    users = {}
    for name, entry in config["dashboard"]["credentials"].items():
        roles = dashboard_server_roles({"dashboard": {"credentials": {name: entry}}})[str(name)]
        role = roles.get(local) or roles.get("*") or "viewer"
        users[str(name)] = (entry["password"] if isinstance(entry, dict) else entry, role)
    return users


def dashboard_server_roles(config: dict) -> dict[str, dict[str, str]]:
    """user -> {server or "*": role} from ``dashboard.credentials`` (issue 24: roles per server).

    A bare hash or a plain ``role`` is that role on every server (``"*"``); ``servers: [..]`` with
    ``role`` is that role on those servers only; ``roles`` maps servers (and ``"*"``) to roles.
    """
    out = {}
    for name, entry in config["dashboard"]["credentials"].items():
        if not isinstance(entry, dict):
            out[str(name)] = {"*": "admin"}
        elif "roles" in entry:
            out[str(name)] = dict(entry["roles"])
        else:
            role = entry.get("role", "admin")
            out[str(name)] = {server: role for server in entry.get("servers") or ["*"]}
    return out


def secrets_of(config: dict) -> list[str]:
    """The secret values a log line must never show."""
    dash = config["dashboard"]
    found = [s for s in (config["security"]["token"], dash["secret_key"], dash.get("metrics_token")) if s]
    offsite_env = config.get("offsite", {}).get("env") or {}
    return found + [v for k, v in offsite_env.items() if re.search(r"SECRET|KEY|TOKEN|PASS", k) and v]
