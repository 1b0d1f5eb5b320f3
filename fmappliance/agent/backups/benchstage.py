"""Files the agent puts into a bench the container can write: a restore's staging dir and site config edits.

An fm bench's workspace is bind-mounted into its containers, so anything below
``<bench>/workspace`` may have been swapped for a symlink by the time the agent (often root) gets
there; following one would write or chown a host path of the container's choosing.  As in
sources.py, every directory is reached from the bench dir (which the container cannot write)
through directory fds opened ``O_NOFOLLOW | O_DIRECTORY``, files are created with ``dir_fd`` and
``O_EXCL | O_NOFOLLOW``, and ownership is handed over with ``fchown`` on open fds -- never by path.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat

from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.layout import NOFOLLOW_DIR, READ_FLAGS
from fmappliance.agent.backups.sources import open_dir_beneath

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` whatever it is; a symlink is unlinked, never followed."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)  # fd-based walk: safe against links planted inside
    else:
        os.unlink(name, dir_fd=dir_fd)


class StageDir:
    """``<root>/<parts...>/<name>``: a fresh directory only the agent made, used through its fd."""

    def __init__(self, root: str, parts: list[str], name: str):
        self.path = os.path.join(root, *parts, name)  # for messages only; never opened by path
        self.name = name
        self.files: list[str] = []
        self.parent_fd = open_dir_beneath(root, parts)
        self.fd = -1
        try:
            _remove_entry(self.parent_fd, name)  # a stale stage of a crashed agent (or a planted link)
            os.mkdir(name, 0o700, dir_fd=self.parent_fd)
            self.fd = os.open(name, NOFOLLOW_DIR, dir_fd=self.parent_fd)
            st = os.fstat(self.fd)
            if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
                raise BackupError(f"{self.path} was replaced while it was being made; refusing to use it")
        except OSError as exc:
            self.close()
            raise BackupError(f"cannot make the restore staging dir {self.path}: {exc.strerror}") from None
        except BaseException:
            self.close()
            raise

    def create(self, name: str, mode: int = 0o640) -> int:
        """A new file in the stage (an fd the caller closes); a name that exists (even as a link) is refused."""
        try:
            fd = os.open(name, _NEW_FILE, mode, dir_fd=self.fd)
        except OSError as exc:
            raise BackupError(f"cannot create {name} in {self.path}: {exc.strerror}") from None
        self.files.append(name)
        return fd

    def hand_over(self, uid: int, gid: int) -> None:
        """Give the stage and the files the agent put there to the bench's owner (fchown on fds only)."""
        for name in self.files:
            try:
                fd = os.open(name, READ_FLAGS | os.O_NONBLOCK, dir_fd=self.fd)
            except OSError as exc:
                raise BackupError(f"{name} in {self.path} changed under the agent ({exc.strerror})") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise BackupError(f"{name} in {self.path} is no longer a plain file; refusing it")
                os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
        os.fchown(self.fd, uid, gid)

    def remove(self) -> None:
        """Delete the stage (links inside are removed, not followed) and close its fds."""
        try:
            if self.parent_fd >= 0:
                try:
                    st = os.stat(self.name, dir_fd=self.parent_fd, follow_symlinks=False)
                    mine = os.fstat(self.fd) if self.fd >= 0 else None
                    if mine is not None and (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                        shutil.rmtree(self.name, dir_fd=self.parent_fd)
                    elif mine is not None:
                        # renamed away by the container and something else put in its place: empty ours
                        for entry in os.listdir(self.fd):
                            _remove_entry(self.fd, entry)
                except FileNotFoundError:
                    pass
        finally:
            self.close()

    def close(self) -> None:
        for attr in ("fd", "parent_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                os.close(fd)
                setattr(self, attr, -1)


# ---------------------------------------------------------------- site config edits in a bench on the host


def read_text_beneath(root: str, parts: list[str], name: str, limit: int = 16 << 20) -> str:
    """A plain file below ``root`` read without following a link anywhere on the way."""
    dir_fd = open_dir_beneath(root, parts)
    shown = os.path.join(root, *parts, name)
    try:
        fd = os.open(name, READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BackupError(f"{shown} is a symlink; refusing to read it") from None
        raise BackupError(f"cannot read {shown}: {exc.strerror}") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BackupError(f"{shown} is not a plain file; refusing to read it")
        return handle.read(limit).decode("utf-8", errors="replace")


def read_json_beneath(root: str, parts: list[str], name: str) -> dict:
    """A JSON object file below ``root`` read without following links; {} when it does not exist."""
    dir_fd = open_dir_beneath(root, parts)
    try:
        return _read_json(dir_fd, name, os.path.join(root, *parts, name))
    finally:
        os.close(dir_fd)


def _read_json(dir_fd: int, name: str, shown: str) -> dict:
    try:
        fd = os.open(name, READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BackupError(f"{shown} is a symlink; refusing to read or change it") from None
        raise BackupError(f"cannot read {shown}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BackupError(f"{shown} is not a plain file; refusing to read or change it")
        try:
            doc = json.loads(handle.read(16 << 20) or b"{}")
        except ValueError:
            raise BackupError(f"{shown} is not valid JSON; refusing to change it") from None
    if not isinstance(doc, dict):
        raise BackupError(f"{shown} is not a JSON object; refusing to change it")
    return doc


def apply_changes(doc: dict, changes: dict) -> dict:
    """Set (value) or remove (None) each key of ``changes`` in ``doc``; returns the values they had before.
    (A site config edit, made here on the host for an fm bench and in the container for a compose project.)"""
    before = {key: doc.get(key) for key in changes}
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return before


def update_json_beneath(root: str, parts: list[str], name: str, changes: dict, owner: tuple[int, int] | None) -> dict:
    """Set (value) or remove (None) keys of a JSON file below ``root``; returns the values they had before.

    The new file is written 0600 next to the old one (created ``O_EXCL | O_NOFOLLOW`` through the dir fd),
    handed to ``owner`` with fchown and renamed over it: the file is never half-written and a secret in it
    is never readable by anyone but the bench's owner.
    """
    dir_fd = open_dir_beneath(root, parts)
    shown = os.path.join(root, *parts, name)
    try:
        doc = _read_json(dir_fd, name, shown)
        before = apply_changes(doc, changes)
        tmp = f".{name}.fmappliance-{secrets.token_hex(6)}"
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as handle:
                json.dump(doc, handle, indent=1)
                handle.flush()
                os.fsync(fd)
            if owner is not None:
                os.fchown(fd, *owner)
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
        return before
    finally:
        os.close(dir_fd)
