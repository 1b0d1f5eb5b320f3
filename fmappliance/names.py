"""What crosses the wire between browser, dashboard and agent: names, action names, timestamps.

Names reach argv lists and file paths, so they are checked twice: here for shape
(ASCII only, so look-alike Unicode never passes), and against the inventory for
existence.  A name that fails here is a 400; a well-formed unknown name is a 404.

Timestamps in the API, the job store, the audit log and notifications are UTC, to the second,
with a Z: ``2026-11-25T21:44:40Z`` (:func:`format_timestamp`, :func:`parse_timestamp`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

#: Every action the agent knows (config's ``security.allowed_actions`` picks from these).
ACTIONS = (
    "restart_stack",
    "update_stack",
    "restart_site",
    "migrate_site",
    "backup_site",
    "start_stack",
    "stop_stack",
    "restore_site",
    "import_backup",
    "test_restore",
    "offsite_copy",
    "offsite_check",
)
#: The actions that work on one site and so need a ``site`` field; the others take none.
SITE_ACTIONS = frozenset(
    {"restart_site", "migrate_site", "backup_site", "restore_site", "import_backup", "test_restore", "offsite_copy"}
)
#: The actions that work on the whole appliance: no ``stack`` field (their jobs carry stack "").
GLOBAL_ACTIONS = frozenset({"offsite_check"})

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

STACK_NAME_RULE = "letters, digits, '.', '_', '-', at most 63 characters, starting with a letter or digit"
SITE_NAME_RULE = "a host name: letters, digits, '.', '_', '-', at most 253 characters, starting with a letter or digit"

_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}", re.ASCII)

#: A published backup's id: its creation time in UTC (see fmappliance.agent.backups).
BACKUP_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", re.ASCII)
#: An import set: the prefix bench gives a backup's files ("20261125_020003-erp_example_com").
IMPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}", re.ASCII)

#: Published backup files: <YYYY-MM-DD_HH-MM-SS>.<part> (see fmappliance.agent.backups).
BACKUP_FILE = re.compile(
    r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"
    r"\.((?:sql\.gz|files\.tar|files\.tgz|private-files\.tar|private-files\.tgz)(?:\.gpg)?|site_config\.json|json)",
    re.ASCII,
)


def is_valid_stack_name(name: object) -> bool:
    return isinstance(name, str) and bool(_STACK.fullmatch(name)) and ".." not in name


def is_valid_site_name(name: object) -> bool:
    return isinstance(name, str) and bool(_SITE.fullmatch(name)) and ".." not in name


def is_valid_backup_file_name(name: object) -> bool:
    return isinstance(name, str) and bool(BACKUP_FILE.fullmatch(name))


def is_valid_backup_id(name: object) -> bool:
    return isinstance(name, str) and bool(BACKUP_ID.fullmatch(name))


def is_valid_import_name(name: object) -> bool:
    return isinstance(name, str) and bool(IMPORT_NAME.fullmatch(name)) and ".." not in name


def format_timestamp(moment: datetime | float | None = None) -> str:
    """``moment`` (aware datetime, epoch seconds, or now) as ``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    if moment is None:
        moment = datetime.now(timezone.utc)
    elif not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(value: object) -> datetime | None:
    """A timestamp text as an aware datetime (no zone means UTC), or None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
