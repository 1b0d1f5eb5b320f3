"""The one config schema: every key of config.yaml, its type, default and help.

The schema drives loading, validation, the example config (packaging/config.example.yaml),
the README's reference and a test that fails when a key is undocumented.  Nothing else in
the code base knows which keys exist.

``load_config(path)`` returns plain nested dicts with every default filled in::

    config["agent"]["port"]                 -> 9100
    config["stacks"]["prod"]["type"]        -> "compose"
    config["security"]["token"]             -> the token (read from token_file if given)

Errors raise ``ConfigError`` whose text is one line naming the file, the key, the YAML
line where there is one, and what is expected.  Secret values never appear in it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fmappliance.names import ACTIONS, STACK_NAME_RULE, is_valid_site_name, is_valid_stack_name

DEFAULT_CONFIG_PATH = "/etc/fmappliance/config.yaml"

#: Every action the agent knows (defined in names.py).  ``allowed_actions`` picks from these.
KNOWN_ACTIONS = ACTIONS
DEFAULT_ALLOWED_ACTIONS = ["restart_stack", "update_stack", "restart_site", "migrate_site", "backup_site"]
DEFAULT_ACTION_TIMEOUTS = {
    "backup_site": 7200,
    "update_stack": 3600,
    "migrate_site": 3600,
    "restart_stack": 600,
    "restart_site": 600,
    "start_stack": 600,
    "stop_stack": 600,
}
NOTIFICATION_EVENTS = ("backup_failed", "backup_missed", "weekly_summary")
BCRYPT_HASH = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
MIN_TOKEN_LENGTH = 32
#: Dashboard roles, least to most privileged.
ROLES = ("viewer", "operator", "admin")
TOTP_MODES = ("required", "optional", "off")


class ConfigError(Exception):
    """A config file that cannot be used; ``str()`` is one line for the operator."""


# --------------------------------------------------------------------------------------
# Schema building blocks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """One scalar or list setting.

    ``kind`` is one of: str, int, bool, path, str_list, secret, int_map, str_map.
    ``check`` returns an error text ("expected ...") or None.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    required: bool = False
    check: Callable[[Any], str | None] | None = None
    example: Any = None  # shown in the example config instead of the default
    coerce: Callable[[Any], Any] | None = None  # applied to the raw value before the type check


@dataclass(frozen=True)
class Section:
    """A mapping of fixed keys."""

    name: str
    keys: tuple
    help: str = ""
    required: bool = False


@dataclass(frozen=True)
class MapOf:
    """A mapping of operator-chosen names (stacks) to sections."""

    name: str
    entry: Section
    name_check: Callable[[str], str | None]
    help: str = ""
    required: bool = False
    example: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ListOf:
    """A list of sections (schedules)."""

    name: str
    entry: Section
    help: str = ""
    example: list = field(default_factory=list)


def _port(v):
    return None if 1 <= v <= 65535 else "expected a port number from 1 to 65535"


def _positive(v):
    return None if v > 0 else "expected a number greater than 0"


def _non_negative(v):
    return None if v >= 0 else "expected 0 or a positive number"


def _one_of(*choices):
    def check(v):
        return None if v in choices else "expected one of: " + ", ".join(choices)

    return check


def _actions(v):
    unknown = [a for a in v if a not in KNOWN_ACTIONS]
    if unknown:
        return f"unknown action {unknown[0]!r}; expected any of: " + ", ".join(KNOWN_ACTIONS)
    return None


def _timeouts(v):
    for action, seconds in v.items():
        if action not in KNOWN_ACTIONS:
            return f"unknown action {action!r}; expected any of: " + ", ".join(KNOWN_ACTIONS)
        if seconds <= 0:
            return f"timeout for {action} must be a positive number of seconds"
    return None


def _token(v):
    if len(v) < MIN_TOKEN_LENGTH:
        return f"expected a random token of at least {MIN_TOKEN_LENGTH} characters"
    return None


def _credentials(v):
    for user, entry in v.items():
        if not re.fullmatch(r"[A-Za-z0-9._@-]{1,64}", str(user)):
            return f"user name {user!r} may only use letters, digits, '.', '_', '@', '-' (at most 64)"
        if isinstance(entry, dict):
            unknown = sorted(set(entry) - {"password", "role"})
            if unknown:
                return f"user {user!r}: unknown key {unknown[0]!r}; expected password and role"
            if entry.get("role", "admin") not in ROLES:
                return f"user {user!r}: role must be one of: " + ", ".join(ROLES)
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


def _site_or_all(v):
    return None if v == "*" or is_valid_site_name(v) else "expected a site name or '*' for every site"


AGENT = Section(
    "agent",
    help="The privileged agent: runs the allow-listed operations.",
    keys=(
        Key("listen", "str", "127.0.0.1", "Address the agent binds to. Keep it on loopback."),
        Key("port", "int", 9100, "TCP port of the agent.", check=_port),
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
        Key("listen", "str", "127.0.0.1", "Address the dashboard binds to (nginx proxies to it)."),
        Key("port", "int", 8000, "TCP port of the dashboard.", check=_port),
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
        Key("agent_url", "str", "http://127.0.0.1:9100", "Where the agent listens.", check=_url),
        Key("session_idle_minutes", "int", 30, "Sign out after this many idle minutes.", check=_positive),
        Key("session_max_hours", "int", 12, "Sign out after this many hours whatever the activity.", check=_positive),
        Key(
            "credentials",
            "user_map",
            None,
            "user: bcrypt hash (an admin), or user: {password: bcrypt hash, role: viewer, operator or admin}. "
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
            "Address of the reverse proxy whose X-Forwarded-For/-Proto are trusted (empty: none).",
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
    ),
)

SCHEDULER = Section(
    "scheduler",
    help="The backup scheduler inside the dashboard.",
    keys=(
        Key(
            "catchup_hours",
            "int",
            6,
            "A run missed while the dashboard was down is made up at start if it is at most this old.",
            check=_non_negative,
        ),
    ),
)

SCHEDULE = Section(
    "schedule",
    help="A backup schedule declared in the config (shown in the UI, not removable there).",
    keys=(
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
            ["backup_failed", "backup_missed"],
            "Events to send: backup_failed, backup_missed, weekly_summary.",
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
        help="Backup schedules declared here (more can be added in the UI).",
        example=[{"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00"}],
    ),
    NOTIFICATIONS,
)


# --------------------------------------------------------------------------------------
# Loading YAML with line numbers
# --------------------------------------------------------------------------------------


class _Located:
    """Plain data plus the YAML line of every key path, for error messages."""

    def __init__(self):
        self.lines: dict[tuple, int] = {}


def _node_to_data(node, path: tuple, located: _Located, loader):
    located.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"line {key_node.start_mark.line + 1}: keys must be plain names")
            key = str(loader.construct_object(key_node))
            if key in out:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: {'.'.join(path + (key,))}: duplicate key")
            located.lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _node_to_data(value_node, path + (key,), located, loader)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_data(n, path + (i,), located, loader) for i, n in enumerate(node.value)]
    return loader.construct_object(node)


def _parse_yaml(text: str) -> tuple[Any, _Located]:
    located = _Located()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = {} if node is None else _node_to_data(node, (), located, loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}not valid YAML ({problem})") from None
    finally:
        loader.dispose()
    return data, located


# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

_KIND_TEXT = {
    "str": "a text",
    "secret": "a text",
    "int": "a whole number",
    "bool": "true or false",
    "path": "a path",
    "str_list": "a list of texts",
    "int_map": "a mapping of names to whole numbers",
    "str_map": "a mapping of names to texts",
    "user_map": "a mapping of user names to a bcrypt hash or {password, role}",
}


class _Validator:
    def __init__(self, located: _Located):
        self.located = located

    def fail(self, path: tuple, expected: str):
        dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[")
        line = self.located.lines.get(path)
        where = f"line {line}: " if line else ""
        raise ConfigError(f"{where}{dotted}: {expected}")

    def value(self, key: Key, raw: Any, path: tuple):
        if raw is None:
            if key.required:
                self.fail(path, f"is required ({key.help})")
            return _copy(key.default)
        if key.coerce:
            raw = key.coerce(raw)
        ok = {
            "str": lambda v: isinstance(v, str),
            "secret": lambda v: isinstance(v, str),
            "path": lambda v: isinstance(v, str) and v != "",
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "str_list": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
            "int_map": lambda v: (
                isinstance(v, dict) and all(isinstance(i, int) and not isinstance(i, bool) for i in v.values())
            ),
            "str_map": lambda v: isinstance(v, dict) and all(isinstance(i, str) for i in v.values()),
            "user_map": lambda v: isinstance(v, dict) and all(isinstance(i, (str, dict)) for i in v.values()),
        }[key.kind]
        if not ok(raw):
            shown = "(hidden)" if key.kind == "secret" else repr(raw)[:60]
            self.fail(path, f"expected {_KIND_TEXT[key.kind]}, got {shown}")
        if key.check:
            problem = key.check(raw)
            if problem:
                self.fail(path, problem)
        if key.kind == "int_map" and isinstance(key.default, dict):
            return {**key.default, **raw}
        return raw

    def section(self, section: Section, raw: Any, path: tuple) -> dict:
        if raw is None:
            if section.required:
                self.fail(path, f"section is required ({section.help})")
            raw = {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping of settings, got {repr(raw)[:60]}")
        known = {k.name for k in section.keys}
        for name in raw:
            if name not in known:
                self.fail(path + (name,), "unknown key; expected one of: " + ", ".join(sorted(known)))
        out = {}
        for key in section.keys:
            if isinstance(key, Section):
                out[key.name] = self.section(key, raw.get(key.name), path + (key.name,))
            else:
                out[key.name] = self.value(key, raw.get(key.name), path + (key.name,))
        return out

    def map_of(self, spec: MapOf, raw: Any, path: tuple) -> dict:
        if raw is None:
            if spec.required:
                self.fail(path, f"section is required ({spec.help}); use {{}} for none")
            return {}
        if not isinstance(raw, dict):
            self.fail(path, f"expected a mapping of names to settings, got {repr(raw)[:60]}")
        out = {}
        for name, entry in raw.items():
            problem = spec.name_check(str(name))
            if problem:
                self.fail(path + (name,), f"bad name: {problem}")
            out[str(name)] = self.section(spec.entry, entry, path + (name,))
        return out

    def list_of(self, spec: ListOf, raw: Any, path: tuple) -> list:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.fail(path, "expected a list")
        return [self.section(spec.entry, item, path + (i,)) for i, item in enumerate(raw)]


def _copy(value):
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value


def validate(data: Any, located: _Located | None = None) -> dict:
    """Check parsed YAML against the schema; return the full config with defaults."""
    located = located or _Located()
    v = _Validator(located)
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
    _cross_checks(config, v, data)
    return config


def _cross_checks(config: dict, v: _Validator, data: dict) -> None:
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
    smtp_pw = config["notifications"]["smtp"]["password_file"]
    if smtp_pw and not os.path.isfile(smtp_pw):
        v.fail(("notifications", "smtp", "password_file"), f"file {smtp_pw} does not exist")


def _read_secret_file(path: str, key_path: tuple, v: _Validator) -> str:
    try:
        st = os.stat(path)
        with open(path, encoding="utf-8") as fh:
            text = fh.read().strip()
    except OSError as exc:
        v.fail(key_path, f"cannot read {path}: {exc.strerror}")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO) & ~stat.S_IRGRP:
        v.fail(key_path, f"{path} must not be writable or readable by others (chmod 0600 or 0640)")
    return text


def load_config(path: str | os.PathLike) -> dict:
    """Read, validate and return the config; raise ConfigError naming the file."""
    path = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    try:
        data, located = _parse_yaml(text)
        return validate(data, located)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def dashboard_users(config: dict) -> dict[str, tuple[str, str]]:
    """user -> (bcrypt hash, role) from ``dashboard.credentials`` (a bare hash means admin)."""
    users = {}
    for name, entry in config["dashboard"]["credentials"].items():
        if isinstance(entry, dict):
            users[str(name)] = (entry["password"], entry.get("role", "admin"))
        else:
            users[str(name)] = (entry, "admin")
    return users


def secrets_of(config: dict) -> list[str]:
    """The secret values a log line must never show."""
    return [s for s in (config["security"]["token"], config["dashboard"]["secret_key"]) if s]


# --------------------------------------------------------------------------------------
# Documentation generated from the schema
# --------------------------------------------------------------------------------------


def iter_keys():
    """Yield (dotted_key, Key) for every documented setting, sections included."""

    def walk(prefix, keys):
        for key in keys:
            if isinstance(key, Section):
                yield prefix + key.name, key
                yield from walk(prefix + key.name + ".", key.keys)
            else:
                yield prefix + key.name, key

    for spec in SCHEMA:
        yield spec.name, spec
        if isinstance(spec, Section):
            yield from walk(spec.name + ".", spec.keys)
        elif isinstance(spec, MapOf):
            yield from walk(spec.name + ".<name>.", spec.entry.keys)
        else:
            yield from walk(spec.name + "[].", spec.entry.keys)


def reference_markdown() -> str:
    """The README's configuration reference."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for dotted, key in iter_keys():
        if isinstance(key, Key):
            default = (
                "required"
                if key.required
                else ("—" if key.default in (None, "", [], {}) else f"`{_yaml_inline(key.default)}`")
            )
            if key.kind == "secret":
                default = "required" if key.required else "—"
            rows.append(f"| `{dotted}` | {default} | {key.help} |")
        else:
            rows.append(f"| **`{dotted}`** | {'required' if getattr(key, 'required', False) else ''} | {key.help} |")
    return "\n".join(rows) + "\n"


def _yaml_inline(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def example_yaml() -> str:
    """The example config: every key with its default (or example), commented with its help."""
    out = [
        "# fmappliance configuration (/etc/fmappliance/config.yaml).",
        "# Generated from fmappliance/config.py: every key, its default and what it does.",
        "# Keys marked 'required' have no default; everything else may be left out.",
        "",
    ]

    def emit_keys(keys, indent):
        pad = "  " * indent
        for key in keys:
            if isinstance(key, Section):
                out.append(f"{pad}# {key.help}")
                out.append(f"{pad}{key.name}:")
                emit_keys(key.keys, indent + 1)
                continue
            value = key.example if key.example is not None else key.default
            note = " (required)" if key.required else ""
            out.append(f"{pad}# {key.help}{note}")
            if value is None:
                out.append(f"{pad}# {key.name}:")
            elif isinstance(value, dict) and value:
                out.append(f"{pad}{key.name}:")
                for k, val in value.items():
                    out.append(f"{pad}  {k}: {_yaml_inline(val)}")
            else:
                out.append(f"{pad}{key.name}: {_yaml_inline(value)}")

    for spec in SCHEMA:
        out.append(f"# {spec.help}")
        if isinstance(spec, Section):
            out.append(f"{spec.name}:")
            emit_keys(spec.keys, 1)
        elif isinstance(spec, MapOf):
            out.append("# Each entry's keys: " + ", ".join(k.name for k in spec.entry.keys) + ".")
            out.append(f"{spec.name}:")
            for name, entry in spec.example.items():
                out.append(f"  {name}:")
                for k, val in entry.items():
                    out.append(f"    {k}: {_yaml_inline(val)}")
        else:
            out.append("# Each entry's keys: " + ", ".join(k.name for k in spec.entry.keys) + ".")
            out.append(f"{spec.name}:")
            for entry in spec.example:
                first = True
                for k, val in entry.items():
                    out.append(f"  {'- ' if first else '  '}{k}: {_yaml_inline(val)}")
                    first = False
        out.append("")
    return "\n".join(out)
