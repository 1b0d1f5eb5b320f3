"""The backup store: one object assembled from the per-concern modules of this package.

``publish`` copies, verifies and atomically publishes (publish.py, verify.py); ``apply_retention``
thins out old backups (retention.py); ``list_backups``/``last_backup`` read manifests
(manifests.py); ``open_published_file`` hands out a published file without following a link
(sitedir.py).  Publish and retention of one site hold its lock, so they never overlap.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from datetime import datetime
from typing import BinaryIO

from fmappliance import wire
from fmappliance.agent.backups import retention as gfs
from fmappliance.agent.backups.errors import BackupError, BackupNotFound, BadBackupRequest
from fmappliance.agent.backups.layout import BACKUP_LABELS, MANIFEST_NAME, PARTS, READ_FLAGS, TEMP_NAME, human_size, utc
from fmappliance.agent.backups.manifests import all_manifests, load_manifest, manifest_ids, summary
from fmappliance.agent.backups.sitedir import check_names, is_plain_file, locked, open_site_dir, scandir_dirs

log = logging.getLogger(__name__)

_LOCK_WAIT_SECONDS = 30.0


class BackupStore:
    """Published backups under ``base_path``: publish (verified), retention, listing, safe open."""

    def __init__(
        self,
        base_path: str,
        retention: dict,
        *,
        keep_safety_days: int = 14,
        lock_wait_seconds: float = _LOCK_WAIT_SECONDS,
    ):
        self.base_path = os.path.abspath(base_path)
        self.retention = {tier: int(retention.get(tier, 0)) for tier in ("daily", "weekly", "monthly", "keep_last")}
        self.keep_safety_days = keep_safety_days
        self.lock_wait_seconds = lock_wait_seconds
        #: The offsite copy's stage (``<stage>/<stack>/<site>/<name>``): the one place a second link to a published
        #: file may be, made by the agent itself (offsite.py); None until an Offsite registers it.
        self.offsite_stage: str | None = None

    def _site_path(self, stack: str, site: str) -> str:
        return os.path.join(self.base_path, stack, site)

    def _open_site_dir(self, stack: str, site: str, *, create: bool = False) -> int:
        return open_site_dir(self.base_path, stack, site, create=create)

    def _locked(self, dir_fd: int, what: str, *, wait: float | None = None):
        return locked(dir_fd, what, wait=self.lock_wait_seconds if wait is None else wait)

    # ---- start-up clean-up -----------------------------------------------------------------

    def clean_temp_files(self) -> int:
        """Remove temp files a killed publish left behind; returns how many were removed."""
        removed = 0
        for stack_entry in scandir_dirs(self.base_path):
            for site_entry in scandir_dirs(stack_entry.path):
                if not (wire.is_valid_stack_name(stack_entry.name) and wire.is_valid_site_name(site_entry.name)):
                    continue
                try:
                    fd = self._open_site_dir(stack_entry.name, site_entry.name)
                except (BackupNotFound, OSError):
                    continue
                try:
                    with self._locked(fd, f"{site_entry.name} on {stack_entry.name}", wait=0):
                        for name in os.listdir(fd):
                            if TEMP_NAME.fullmatch(name) and is_plain_file(fd, name):
                                os.unlink(name, dir_fd=fd)
                                removed += 1
                                log.info("removed leftover temp file %s", os.path.join(site_entry.path, name))
                except BackupError as exc:
                    log.info("skipped temp clean-up in %s: %s", site_entry.path, exc)
                except OSError as exc:
                    log.warning("could not clean temp files in %s: %s", site_entry.path, exc.strerror)
                finally:
                    os.close(fd)
        return removed

    # ---- publish ---------------------------------------------------------------------------

    def publish(
        self,
        stack: str,
        site: str,
        sources: dict[str, str],
        *,
        created: datetime | None = None,
        label: str = wire.MANUAL,
        apps: list[str] | None = None,
        source_root: str | None = None,
    ) -> dict:
        """Copy, verify and atomically publish one backup; returns its manifest.

        ``label`` (one of BACKUP_LABELS) and ``apps`` (what `bench list-apps` said, None when unknown)
        go into the manifest.  ``source_root``: the sources lie below it and no directory below it is
        followed as a link.  On any failure nothing is left under a final name (and no temp), and
        BackupError says why.
        """
        if label not in BACKUP_LABELS:
            raise ValueError(f"unknown backup label {label!r}")
        unknown = set(sources) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown backup parts: {sorted(unknown)}")
        if "database" not in sources:
            raise BackupError(f"bench produced no database dump for {site}; nothing was published")
        check_names(stack, site)
        moment = utc(created)
        # The pipeline (hashing, tar and gzip checks, encryption) is loaded by the first backup, not at start.
        from fmappliance.agent.backups import publish as pipeline
        from fmappliance.agent.backups.encrypted import backup_passphrase

        sources_open = pipeline.open_sources(sources, source_root)
        try:
            self._check_free_space(sum(st.st_size for _fd, st in sources_open.values()))
            where = self._site_path(stack, site)
            try:
                dir_fd = self._open_site_dir(stack, site, create=True)
            except BackupNotFound as exc:
                raise BackupError(str(exc)) from None
            except OSError as exc:
                raise BackupError(f"cannot create the backup directory {where}: {exc.strerror}") from None
            try:
                passphrase = backup_passphrase(sources, sources_open)
                with self._locked(dir_fd, f"{site} on {stack}"):
                    return pipeline.publish_into(
                        dir_fd,
                        stack,
                        site,
                        moment,
                        sources_open,
                        where,
                        source_names={part: os.path.basename(path) for part, path in sources.items()},
                        passphrase=passphrase,
                        label=label,
                        apps=apps,
                    )
            finally:
                os.close(dir_fd)
        finally:
            for fd, _st in sources_open.values():
                os.close(fd)

    def check_room_for_copy(self, needed: int, staging_dir: str) -> None:
        """Refuse, before anything is copied, a backup of ``needed`` bytes that would not fit.

        Copying out of a container goes to ``staging_dir`` first and is then published under
        base_path: on one filesystem that needs twice the room.
        """
        staging = shutil.disk_usage(_existing(staging_dir))
        base = self.disk_usage()
        same_disk = os.stat(_existing(staging_dir)).st_dev == os.stat(_existing(self.base_path)).st_dev
        if same_disk and staging.free < 2 * needed:
            raise BackupError(
                f"not enough free space to copy the backup out of the container: it needs {human_size(needed)} "
                f"twice (a copy in {staging_dir}, then the published one in {self.base_path}, the same disk), "
                f"{human_size(staging.free)} are free; free some space or lower the retention"
            )
        if staging.free < needed:
            raise BackupError(
                f"not enough free space in {staging_dir} to copy the backup out of the container: it needs "
                f"{human_size(needed)}, {human_size(staging.free)} are free; free some space there"
            )
        if base["free_bytes"] < needed:
            self._check_free_space(needed)

    def _check_free_space(self, needed: int) -> None:
        usage = self.disk_usage()
        if usage["free_bytes"] < needed:
            raise BackupError(
                f"not enough free space in {usage['path']}: the backup needs {human_size(needed)}, "
                f"{human_size(usage['free_bytes'])} are free; free some space or lower the retention"
            )

    # ---- manifests -------------------------------------------------------------------------

    def list_backups(self, stack: str, site: str) -> list[dict]:
        """Published backups of a site, newest first, in the API's shape."""
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return []
        try:
            return [summary(m, with_files=True) for m in all_manifests(dir_fd, stack, site)]
        finally:
            os.close(dir_fd)

    def get_manifest(self, stack: str, site: str, backup_id) -> dict | None:
        """The manifest of one published backup, or None when there is no such (well-formed) backup."""
        if not isinstance(backup_id, str) or not MANIFEST_NAME.fullmatch(backup_id + ".json"):
            return None
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return None
        try:
            return load_manifest(dir_fd, backup_id, stack, site)
        finally:
            os.close(dir_fd)

    def last_backup(self, stack: str, site: str) -> dict | None:
        """{"id", "created", "size", "verified"} of the newest backup, or None (reads one manifest)."""
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return None
        try:
            for backup_id in manifest_ids(dir_fd):
                manifest = load_manifest(dir_fd, backup_id, stack, site)
                if manifest is not None:
                    return summary(manifest, with_files=False)
            return None
        finally:
            os.close(dir_fd)

    # ---- retention -------------------------------------------------------------------------

    def apply_retention(self, stack: str, site: str, *, now: datetime | None = None) -> list[str]:
        """Delete verified backups that nothing keeps (retention.py); returns the deleted ids.

        Only backups with a verified manifest stamped up to ``now`` are counted or deleted (a clock that
        went backwards must not cost backups); the newest of them is always kept.  Files without a
        manifest are never touched.  Call it only after a verified publish.
        """
        moment = utc(now)
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return []
        try:
            with self._locked(dir_fd, f"{site} on {stack}"):
                deleted = gfs.delete_unkept(dir_fd, stack, site, self.retention, moment, self.keep_safety_days)
        finally:
            os.close(dir_fd)
        if deleted:
            log.info("retention removed %d backup(s) of %s on %s: %s", len(deleted), site, stack, ", ".join(deleted))
        return deleted

    # ---- downloads -------------------------------------------------------------------------

    def published_path(self, stack: str, site: str, name: str) -> str:
        """Where a file of a published backup lies on disk (for a copy by path, after open_published_file checked it)."""
        check_names(stack, site)
        return os.path.join(self.base_path, stack, site, os.path.basename(name))

    def open_published_file(self, stack: str, site: str, name: str) -> tuple[BinaryIO, os.stat_result]:
        """Open a file listed in a manifest of this stack/site (or the manifest itself) for reading.

        Refuses (before reading a byte) anything that is not a plain, singly linked regular file directly
        in the site's own backup directory.
        """
        check_names(stack, site)
        if not wire.is_valid_backup_file_name(name):
            raise BadBackupRequest(f"{name!r} is not a backup file name (expected <YYYY-MM-DD_HH-MM-SS>.<part>).")
        missing = BackupNotFound(f"No backup file {name} for {site} on {stack}.")
        expected_dir = os.path.join(os.path.realpath(self.base_path), stack, site)
        if (
            os.path.realpath(self._site_path(stack, site)) != expected_dir
            or os.path.commonpath([expected_dir, os.path.realpath(os.path.join(expected_dir, name))]) != expected_dir
        ):
            raise missing
        dir_fd = self._open_site_dir(stack, site)
        try:
            backup_id = name[:19]
            manifest = load_manifest(dir_fd, backup_id, stack, site)
            if manifest is None:
                raise missing
            listed = {f["name"]: f["size"] for f in manifest["files"]}
            if name != backup_id + ".json" and name not in listed:
                raise missing
            try:
                fd = os.open(name, READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError:  # ELOOP: a symlink in its place; ENOENT: deleted by retention
                raise missing from None
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not (st.st_nlink == 1 or self._staged_offsite(stack, site, name, st)):
                raise missing
            if name in listed and st.st_size != listed[name]:
                log.warning("published file %s/%s/%s changed size since publication; not serving it", stack, site, name)
                raise missing
            os.set_blocking(fd, True)
            return open(fd, "rb", buffering=0), st
        except BaseException:
            os.close(fd)
            raise

    def _staged_offsite(self, stack: str, site: str, name: str, st: os.stat_result) -> bool:
        """True for a published file of the agent's own with exactly one more link: its name in the offsite stage.

        Any other second name (one planted in the site dir, pointing at a file that is not a backup) is refused.
        """
        if st.st_nlink != 2 or st.st_uid != os.geteuid() or not self.offsite_stage:
            return False
        try:
            other = os.lstat(os.path.join(self.offsite_stage, stack, site, name))
        except OSError:
            return False
        return stat.S_ISREG(other.st_mode) and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)

    def disk_usage(self) -> dict:
        """{"path", "free_bytes", "total_bytes"} of base_path's filesystem (or its nearest existing parent)."""
        usage = shutil.disk_usage(_existing(self.base_path))
        return {"path": self.base_path, "free_bytes": usage.free, "total_bytes": usage.total}


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent (whose filesystem it will be created on)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path
