"""Verified backup publication, retention and safe access to published files.

One store (store.py) assembled from small per-concern modules: layout.py (names on disk),
verify.py (content checks of each part), publish.py (the copy-and-publish pipeline), manifests.py
(reading manifests), retention.py (GFS, keep_last, the safety hold of labelled backups), sitedir.py
(reaching a site's directory without following links, and its lock), sources.py (reaching the files bench
left without following a link the container planted).  Import the public names from here.
"""

from __future__ import annotations

from fmappliance.agent.backups.errors import BackupError, BackupNotFound, BadBackupRequest
from fmappliance.agent.backups.layout import BACKUP_LABELS, ID_FORMAT, PARTS
from fmappliance.agent.backups.manifests import manifest_label
from fmappliance.agent.backups.retention import gfs_keep
from fmappliance.agent.backups.store import BackupStore

#: Loaded on first use (a restore reads a backup back; an agent at rest does not).
_READBACK = ("DumpHasAuthTable", "copy_hashed", "decrypting")


def __getattr__(name: str):
    if name in _READBACK:
        from fmappliance.agent.backups import readback

        return getattr(readback, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BACKUP_LABELS",
    "ID_FORMAT",
    "PARTS",
    "BackupError",
    "BackupNotFound",
    "BackupStore",
    "BadBackupRequest",
    "DumpHasAuthTable",
    "copy_hashed",
    "decrypting",
    "gfs_keep",
    "manifest_label",
]
