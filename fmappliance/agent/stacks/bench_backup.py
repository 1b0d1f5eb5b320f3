"""What `bench --site S backup --with-files` printed: which files make up the backup.

Both stack types run the same bench command and get the same output; only where the files are
(host path for fm, container path for compose) differs.  The shape of the summary block is
described in docs/doubles.md, bench's file names in backups/bench_names.py.
"""

from __future__ import annotations

import os
import re

from fmappliance.agent.backups import bench_names

# `bench backup` summary lines: "Database: /path/to/file 1.5MiB".
_SUMMARY_LINE = re.compile(r"^\s*(Config|Database|Public|Private)\s*:\s*(/\S+)\s+[\d.]+\s*[KMGT]?i?B\s*$")
_SUMMARY_PART = {"Config": "site_config", "Database": "database", "Public": "files", "Private": "private-files"}


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
        if match and bench_names.parse(os.path.basename(match.group(2))):
            parts[_SUMMARY_PART[match.group(1)]] = match.group(2)
    return parts


def newest_backup_set(names: list[str]) -> dict[str, str]:
    """part -> file name of the newest complete-looking backup among ``names`` (bench's names)."""
    groups: dict[str, dict[str, str]] = {}
    for name in names:
        match = bench_names.parse(name)
        if match and match.group("kind") in bench_names.PART_OF_KIND:
            groups.setdefault(match.group("ts"), {})[bench_names.PART_OF_KIND[match.group("kind")]] = name
    for ts in sorted(groups, reverse=True):
        if "database" in groups[ts]:
            return groups[ts]
    return {}
