"""Grandfather-father-son retention: which verified backups each daily/weekly/monthly slot keeps."""

from __future__ import annotations

import os
from datetime import datetime

from fmappliance.agent.backups.layout import parse_id
from fmappliance.agent.backups.manifests import all_manifests


def gfs_keep(ids: list[str], retention: dict) -> set[str]:
    """Backup ids kept by grandfather-father-son retention (ids are UTC timestamps).

    Per tier, walking newest first, the first backup of each new day / ISO week / month is kept until
    the tier has its count; tiers are independent (a backup may fill several).  The newest is always kept.
    """
    ordered = sorted(ids, reverse=True)
    keep = set(ordered[:1])
    buckets = (
        ("daily", lambda d: d.date()),
        ("weekly", lambda d: d.isocalendar()[:2]),
        ("monthly", lambda d: (d.year, d.month)),
    )
    for tier, bucket_of in buckets:
        wanted = int(retention.get(tier, 0))
        seen: set = set()
        for backup_id in ordered:
            if len(seen) >= wanted:
                break
            bucket = bucket_of(parse_id(backup_id))
            if bucket not in seen:
                seen.add(bucket)
                keep.add(backup_id)
    return keep


def delete_unkept(dir_fd: int, stack: str, site: str, retention: dict, now: datetime) -> list[str]:
    """Delete (under the caller's lock) the verified backups no slot keeps; returns the deleted ids.

    Backups stamped after ``now`` (the clock went backwards) are left alone and take no slot.
    """
    candidates = [m for m in all_manifests(dir_fd, stack, site) if m["verified"] is True and parse_id(m["id"]) <= now]
    keep = gfs_keep([m["id"] for m in candidates], retention)
    deleted = []
    for manifest in candidates:
        if manifest["id"] in keep:
            continue
        for entry in manifest["files"]:
            try:
                os.unlink(entry["name"], dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        os.unlink(manifest["id"] + ".json", dir_fd=dir_fd)
        deleted.append(manifest["id"])
    if deleted:
        os.fsync(dir_fd)
    return deleted
