"""What `bench --site S backup --with-files` printed: which files make up the backup.

Both stack types run the same bench command and get the same output; only where the files are
(host path for fm, container path for compose) differs.  The shape of the summary block and of
bench's file names is described in docs/doubles.md.
"""

from __future__ import annotations

import os
import re

# `bench backup` summary lines: "Database: /path/to/file 1.5MiB".
_SUMMARY_LINE = re.compile(r"^\s*(Config|Database|Public|Private)\s*:\s*(/\S+)\s+[\d.]+\s*[KMGT]?i?B\s*$")
_SUMMARY_PART = {"Config": "site_config", "Database": "database", "Public": "files", "Private": "private-files"}
# File names bench gives a backup: {%Y%m%d_%H%M%S}-{site slug}-{part}.
_BACKUP_FILE = re.compile(
    r"(?P<ts>\d{8}_\d{6})-[A-Za-z0-9._-]+?-"
    r"(?P<kind>site_config_backup|database|files|private-files)(?P<enc>-enc)?"
    r"(?P<ext>\.json|\.sql\.gz|\.tar|\.tgz)"
)
# Which extensions each kind has; `-enc` marks a part of an encrypted backup (docs/restore.md).
_KIND_EXT = {
    "site_config_backup": (".json",),
    "database": (".sql.gz",),
    "files": (".tar", ".tgz"),
    "private-files": (".tar", ".tgz"),
}
_KIND_PART = {
    "site_config_backup": "site_config",
    "database": "database",
    "files": "files",
    "private-files": "private-files",
}


def _bench_backup_name(name: str):
    match = _BACKUP_FILE.fullmatch(name)
    return match if match and match.group("ext") in _KIND_EXT[match.group("kind")] else None


def parse_backup_summary(output: str, site: str) -> dict[str, str]:
    """part -> path (in the container) from `bench backup`'s "Backup Summary for S" block."""
    parts: dict[str, str] = {}
    in_summary = False
    for line in output.splitlines():
        if line.startswith("Backup Summary for "):
            in_summary = line.startswith(f"Backup Summary for {site} ")
            parts = {} if in_summary else parts
            continue
        match = _SUMMARY_LINE.match(line) if in_summary else None
        if match and _bench_backup_name(os.path.basename(match.group(2))):
            parts[_SUMMARY_PART[match.group(1)]] = match.group(2)
    return parts


def newest_backup_set(names: list[str]) -> dict[str, str]:
    """part -> file name of the newest complete-looking backup among ``names`` (bench's names)."""
    groups: dict[str, dict[str, str]] = {}
    for name in names:
        match = _bench_backup_name(name)
        if match:
            groups.setdefault(match.group("ts"), {})[_KIND_PART[match.group("kind")]] = name
    for ts in sorted(groups, reverse=True):
        if "database" in groups[ts]:
            return groups[ts]
    return {}
