"""The agent⇄dashboard contract: what crosses the wire, in one place.

Names and ids (stack, site, backup id, import set, job id), timestamps, job fields and statuses,
backup labels, and the fields an action request carries.  The actions themselves (scope, fields,
timeouts, messages) are rows of :mod:`fmappliance.actions_table`, which builds on this module.
The dashboard tests' fake agent imports its vocabulary from here and the contract test
(tests/test_agent_contract.py) compares its answers with the real agent's.

Names reach argv lists and file paths, so they are checked twice: here for shape
(ASCII only, so look-alike Unicode never passes), and against the inventory for
existence.  A name that fails here is a 400; a well-formed unknown name is a 404.

Timestamps in the API, the job store, the audit log and notifications are UTC, to the second,
with a Z: ``2026-11-25T21:44:40Z`` (:func:`format_timestamp`, :func:`parse_timestamp`).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

STACK_NAME_RULE = "letters, digits, '.', '_', '-', at most 63 characters, starting with a letter or digit"
SITE_NAME_RULE = "a host name: letters, digits, '.', '_', '-', at most 253 characters, starting with a letter or digit"

_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", re.ASCII)
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}", re.ASCII)

#: A published backup's id: its creation time in UTC (see fmappliance.agent.backups).
BACKUP_ID_FORMAT = "%Y-%m-%d_%H-%M-%S"
BACKUP_ID_PATTERN = r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}"
BACKUP_ID = re.compile(BACKUP_ID_PATTERN, re.ASCII)
BACKUP_ID_EXAMPLE = "2026-01-13_02-00-03"
#: An import set: the prefix bench gives a backup's files ("20261125_020003-erp_example_com").
IMPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}", re.ASCII)
#: What import_backup accepts as an import set's name (bench's stamp, then the site): GET /imports lists these.
IMPORT_SET_NAME = re.compile(r"\d{8}_\d{6}-[A-Za-z0-9._-]{1,200}", re.ASCII)
#: A job id: 16 hex digits.
JOB_ID = re.compile(r"[0-9a-f]{16}", re.ASCII)

# ---------------------------------------------------------------------- jobs

#: A job's statuses: queued -> running -> succeeded | failed.
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
UNFINISHED = (QUEUED, RUNNING)
FINISHED = (SUCCEEDED, FAILED)
#: Every field of a job as GET /jobs/<id> answers it (and GET /jobs and POST /action embed it).
JOB_FIELDS = (
    "id",
    "action",
    "stack",
    "site",
    "status",
    "created",
    "started",
    "finished",
    "exit_code",
    "message",
    "output",
    "result",
)

# ---------------------------------------------------------------------- backups

#: Why a backup was taken (its manifest's ``label``).
MANUAL, SCHEDULED, PRE_RESTORE, PRE_UPDATE, IMPORTED = "manual", "scheduled", "pre-restore", "pre-update", "imported"
BACKUP_LABELS = (MANUAL, SCHEDULED, PRE_RESTORE, PRE_UPDATE, IMPORTED)
#: The labels a caller may give backup_site; the agent sets the others itself.
CALLER_LABELS = (MANUAL, SCHEDULED)
#: Kept at least backups.keep_safety_days whatever the retention counts say.
SAFETY_LABELS = frozenset({MANUAL, PRE_UPDATE, PRE_RESTORE, IMPORTED})
#: Where a restore or a restore test reads its backup from.
BACKUP_SOURCES = ("local", "offsite")

# ---------------------------------------------------------------------- action requests

#: The fields every action request may carry; each action adds its own (fmappliance.actions_table).
ACTION_FIELDS = ("action", "stack", "site")

#: Published backup files: <YYYY-MM-DD_HH-MM-SS>.<part> (see fmappliance.agent.backups).
BACKUP_FILE = re.compile(
    BACKUP_ID_PATTERN
    + r"\.((?:sql\.gz|files\.tar|files\.tgz|private-files\.tar|private-files\.tgz)(?:\.gpg)?|site_config\.json|json)",
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


def backup_time(backup_id: str) -> str:
    """A backup id (its UTC creation time) as an API timestamp."""
    return format_timestamp(datetime.strptime(backup_id, BACKUP_ID_FORMAT).replace(tzinfo=timezone.utc))


def parse_timestamp(value: object) -> datetime | None:
    """A timestamp text as an aware datetime (no zone means UTC), or None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
