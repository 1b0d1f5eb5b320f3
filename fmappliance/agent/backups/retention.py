"""Retention: which verified backups stay.

A backup stays when any of these keeps it: a grandfather-father-son slot (the newest of each of the
last ``daily`` days, ``weekly`` ISO weeks and ``monthly`` months), ``keep_last`` (the newest N),
or its label: a backup someone asked for at a precise moment (``manual`` before a risky change,
``pre-update``, ``pre-restore``, ``imported``) is kept at least ``keep_safety_days``.  Strict GFS
alone keeps one backup a day, so the scheduled run at night would delete that afternoon's
"Backup now" -- exactly the backup the operator wanted.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from fmappliance import wire
from fmappliance.agent.backups.layout import parse_id
from fmappliance.agent.backups.manifests import all_manifests, manifest_label


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


#: Labels of backups taken on purpose at one moment; kept at least keep_safety_days.  A manifest
#: without a label (published before labels existed, by "Backup now", an update or a schedule --
#: nothing tells which) reads as ``manual`` (manifest_label): the cost is keeping a few scheduled
#: backups keep_safety_days longer, the alternative could delete the one taken by hand.
SAFETY_LABELS = wire.SAFETY_LABELS


def kept_ids(manifests: list[dict], retention: dict, now: datetime, safety_days: int) -> set[str]:
    """Ids of ``manifests`` (verified, stamped up to ``now``) that retention keeps."""
    ids = [m["id"] for m in manifests]
    keep = gfs_keep(ids, retention)
    keep.update(sorted(ids, reverse=True)[: int(retention.get("keep_last", 0))])
    horizon = now - timedelta(days=safety_days)
    keep.update(m["id"] for m in manifests if manifest_label(m) in SAFETY_LABELS and parse_id(m["id"]) > horizon)
    return keep


def delete_unkept(dir_fd: int, stack: str, site: str, retention: dict, now: datetime, safety_days: int) -> list[str]:
    """Delete (under the caller's lock) the verified backups nothing keeps; returns the deleted ids.

    Backups stamped after ``now`` (the clock went backwards) are left alone and take no slot.
    """
    candidates = [m for m in all_manifests(dir_fd, stack, site) if m["verified"] is True and parse_id(m["id"]) <= now]
    keep = kept_ids(candidates, retention, now, safety_days)
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
