"""Reaching the files bench left, without following a link the container could have planted.

A bench's workspace is writable from inside its containers: any directory on the way to
``sites/<site>/private/backups`` may have been swapped for a symlink to another bench's backups.
Below the root the operator configured, every directory is therefore opened relative to its parent
with ``O_NOFOLLOW | O_DIRECTORY`` and the file itself with ``O_NOFOLLOW``: a symlink anywhere on the
way is refused, never followed.
"""

from __future__ import annotations

import errno
import os

from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.layout import DIR_FLAGS, descend


def relative_parts(root: str, path: str) -> list[str]:
    """The components of ``path`` below ``root``; refuses a path outside it."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = relative.split(os.sep)
    if relative in (".", "") or parts[0] == ".." or os.path.isabs(relative):
        raise BackupError(f"{path} is not inside {root}; refusing to read it")
    return parts


def open_dir_beneath(root: str, parts: list[str]) -> int:
    """An fd of root/parts[0]/..., each component opened without following a symlink.

    ``root`` itself may be a symlink (the operator chose it); nothing below it may be.
    """
    try:
        fd = os.open(root, DIR_FLAGS)
    except OSError as exc:
        raise BackupError(f"cannot open {root}: {exc.strerror}") from None

    def refuse(walked: str, exc: OSError) -> Exception:
        path = os.path.join(root, walked)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return BackupError(
                f"{path} is a symbolic link or not a directory; refusing to follow it "
                f"(something inside the container replaced a directory on the way to the backups)"
            )
        return BackupError(f"cannot open {path}: {exc.strerror}")

    return descend(fd, parts, refuse)


def open_file_beneath(root: str, path: str, flags: int) -> int:
    """An fd of the file ``path`` below ``root``, no component (the file included) followed as a link."""
    *dirs, name = relative_parts(root, path)
    dir_fd = open_dir_beneath(root, dirs)
    try:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def list_dir_beneath(root: str, path: str) -> list[tuple[str, os.stat_result]]:
    """(name, lstat) of each entry of the directory ``path`` below ``root``, reached without links."""
    dir_fd = open_dir_beneath(root, relative_parts(root, path))
    try:
        return [(name, os.stat(name, dir_fd=dir_fd, follow_symlinks=False)) for name in os.listdir(dir_fd)]
    finally:
        os.close(dir_fd)
