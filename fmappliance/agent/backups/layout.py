"""Names on disk: parts, backup ids, manifest and temp names, and the open flags used to reach them.

Layout: ``<base_path>/<stack>/<site>/<YYYY-MM-DD_HH-MM-SS>.<part suffix>`` plus ``<id>.json``.
A backup id is its UTC creation time, so ids sort as text in time order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timezone

from fmappliance import wire

PARTS = ("database", "files", "private-files", "site_config")
ID_FORMAT = wire.BACKUP_ID_FORMAT

#: How an operator message names each part ("the database dump is truncated ...").
LABELS = {
    "database": "the database dump",
    "files": "the public files archive",
    "private-files": "the private files archive",
    "site_config": "the site config",
}
#: Why a backup was taken: manual and scheduled come with backup_site; the agent sets the others.
BACKUP_LABELS = wire.BACKUP_LABELS
MANIFEST_NAME = re.compile(rf"({wire.BACKUP_ID_PATTERN})\.json", re.ASCII)
#: Temp names are ".<final name>.tmp-<random>"; clean_temp_files removes exactly these.
TEMP_NAME = re.compile(r"\.[^/]+\.tmp-[0-9a-f]+", re.ASCII)
SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
LOCK_NAME = ".lock"

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
NOFOLLOW_DIR = DIR_FLAGS | os.O_NOFOLLOW
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def descend(
    fd: int,
    names: Iterable[str],
    refuse: Callable[[str, OSError], Exception | None],
    *,
    create: bool = False,
) -> int:
    """From the directory ``fd`` down through ``names``, each opened without following a symlink.

    Takes ``fd`` over: every fd on the way is closed, the last one is returned.  ``create`` makes a
    missing directory (0750).  When an open fails, ``refuse(walked, exc)`` (``walked``: the names so far,
    joined) gives the exception to raise instead, or None to raise the OSError itself.
    """
    walked = ""
    try:
        for name in names:
            walked = os.path.join(walked, name)
            try:
                child = _open_child(fd, name, create)
            except OSError as exc:
                refusal = refuse(walked, exc)
                if refusal is None:
                    raise
                raise refusal from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child(fd: int, name: str, create: bool) -> int:
    try:
        return os.open(name, NOFOLLOW_DIR, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, 0o750, dir_fd=fd)
    except FileExistsError:
        pass
    child = os.open(name, NOFOLLOW_DIR, dir_fd=fd)
    os.fchmod(child, 0o750)
    return child


def utc(moment: datetime | None) -> datetime:
    """``moment`` (or now) in UTC to the second; a naive datetime is taken to be UTC already."""
    if moment is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def parse_id(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=timezone.utc)


def human_size(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover
