"""bench's file names for a backup, in one place: ``{%Y%m%d_%H%M%S}-{site slug}-{kind}[-enc]{ext}``.

The site slug is the site name with dots as underscores; ``-enc`` marks a part of an encrypted
backup (bench recognises such a part by its name alone).  What the real bench prints and names is
described in docs/doubles.md.  Read when a backup is taken (stacks/bench_backup.py), when an import
set is listed (imports.py) and when a published backup is staged for `bench restore` (restore.py).
"""

from __future__ import annotations

import os
import re

#: bench's kind in a file name for each part of a published backup.
KIND_OF_PART = {
    "database": "database",
    "files": "files",
    "private-files": "private-files",
    "site_config": "site_config_backup",
}
PART_OF_KIND = {kind: part for part, kind in KIND_OF_PART.items()}
#: A dump of some tables only (bench backup --only/--exclude): recognised, never restorable.
PARTIAL_DATABASE = "partial-database"
#: The extensions each kind comes with.
KIND_EXT = {
    "site_config_backup": (".json",),
    "database": (".sql.gz",),
    PARTIAL_DATABASE: (".sql.gz",),
    "files": (".tar", ".tgz"),
    "private-files": (".tar", ".tgz"),
}
_FILE_NAME = re.compile(
    r"(?P<set>(?P<ts>\d{8}_\d{6})-[A-Za-z0-9._-]+?)"
    r"-(?P<kind>site_config_backup|partial-database|database|private-files|files)"
    r"(?P<enc>-enc)?(?P<ext>\.json|\.sql\.gz|\.tar|\.tgz)",
    re.ASCII,
)
_ENCRYPTED = re.compile(r"-enc\.(sql\.gz|tar|tgz|json)$")


def parse(name: str) -> re.Match | None:
    """The parts of one of bench's backup file names (groups set, ts, kind, enc, ext), or None."""
    match = _FILE_NAME.fullmatch(name)
    return match if match and match.group("ext") in KIND_EXT[match.group("kind")] else None


def is_encrypted_name(name: str) -> bool:
    """bench's name for a part of an encrypted backup: ``…-database-enc.sql.gz``, ``…-files-enc.tar``."""
    return bool(_ENCRYPTED.search(os.path.basename(name)))


def file_name(stamp: str, site: str, part: str, ext: str, *, encrypted: bool) -> str:
    """The name bench gives ``part`` of the backup taken at ``stamp`` (``%Y%m%d_%H%M%S``) of ``site``."""
    return f"{stamp}-{site.replace('.', '_')}-{KIND_OF_PART[part]}{'-enc' if encrypted else ''}{ext}"
