"""Manifests: a backup exists exactly when its ``<id>.json`` does and has the expected shape."""

from __future__ import annotations

import json
import logging
import os
import stat

from fmappliance import wire
from fmappliance.agent.backups.layout import BACKUP_LABELS, MANIFEST_NAME, PARTS, READ_FLAGS, SHA256

log = logging.getLogger(__name__)

_MAX_MANIFEST = 1 << 20


def manifest_ids(dir_fd: int) -> list[str]:
    """Ids of the manifests in a site dir, newest first (ids are timestamps, so they sort as text)."""
    return sorted((m.group(1) for m in map(MANIFEST_NAME.fullmatch, os.listdir(dir_fd)) if m), reverse=True)


def all_manifests(dir_fd: int, stack: str, site: str) -> list[dict]:
    """Every well-formed manifest in a site dir, newest first (broken ones are logged and skipped)."""
    found = []
    for backup_id in manifest_ids(dir_fd):
        manifest = load_manifest(dir_fd, backup_id, stack, site)
        if manifest is not None:
            found.append(manifest)
    return found


def summary(manifest: dict, *, with_files: bool) -> dict:
    """A manifest in the API's shape: with files for listings, without for the status page."""
    size = sum(f["size"] for f in manifest["files"])
    if not with_files:
        return {"id": manifest["id"], "created": manifest["created"], "size": size, "verified": manifest["verified"]}
    return {
        "id": manifest["id"],
        "created": manifest["created"],
        "stack": manifest["stack"],
        "site": manifest["site"],
        "verified": manifest["verified"],
        "size": size,
        "label": manifest_label(manifest),
        "encrypted": manifest.get("encrypted") is True,
        "apps": manifest.get("apps") if isinstance(manifest.get("apps"), list) else None,
        "files": [{k: f[k] for k in ("name", "part", "size", "sha256")} for f in manifest["files"]],
    }


def manifest_label(manifest: dict) -> str:
    """Why the backup was taken; backups published before labels existed were taken by hand or schedule: manual."""
    label = manifest.get("label")
    return label if label in BACKUP_LABELS else wire.MANUAL


def load_manifest(dir_fd: int, backup_id: str, stack: str, site: str) -> dict | None:
    """A manifest that is a plain file with the expected shape, or None (logged)."""
    name = backup_id + ".json"
    try:
        fd = os.open(name, READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring manifest %s of %s on %s: %s", name, site, stack, exc.strerror)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MANIFEST:
            log.warning("ignoring manifest %s of %s on %s: not a plain file of sane size", name, site, stack)
            return None
        with open(fd, "rb", closefd=False) as handle:
            doc = json.loads(handle.read(_MAX_MANIFEST + 1))
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring manifest %s of %s on %s: not valid JSON (%s)", name, site, stack, exc)
        return None
    finally:
        os.close(fd)
    problem = manifest_problem(doc, backup_id, stack, site)
    if problem:
        log.warning("ignoring manifest %s of %s on %s: %s", name, site, stack, problem)
        return None
    return doc


def manifest_problem(doc, backup_id: str, stack: str, site: str) -> str | None:
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("id") != backup_id or doc.get("stack") != stack or doc.get("site") != site:
        return "id, stack or site do not match its place"
    if not isinstance(doc.get("created"), str) or not isinstance(doc.get("verified"), bool):
        return "missing created/verified"
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        return "no files listed"
    for entry in files:
        if not (
            isinstance(entry, dict)
            and wire.is_valid_backup_file_name(entry.get("name"))
            and entry["name"].startswith(backup_id + ".")
            and entry["name"] != backup_id + ".json"
            and entry.get("part") in PARTS
            and isinstance(entry.get("size"), int)
            and not isinstance(entry.get("size"), bool)
            and entry["size"] >= 0
            and isinstance(entry.get("sha256"), str)
            and SHA256.fullmatch(entry["sha256"])
        ):
            return f"bad file entry {entry!r:.200}"
    return None
