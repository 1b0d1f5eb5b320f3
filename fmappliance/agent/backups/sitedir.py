"""Reaching a site's backup directory safely, and the per-site lock.

Every access goes through a directory fd opened without following symlinks below base_path, so a
published name can never resolve outside its own directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fmappliance import wire
from fmappliance.agent.backups.errors import BackupError, BackupNotFound, BadBackupRequest
from fmappliance.agent.backups.layout import DIR_FLAGS, LOCK_NAME, descend


def check_names(stack: str, site: str) -> None:
    if not wire.is_valid_stack_name(stack):
        raise BadBackupRequest(f"{stack!r} is not a valid stack name ({wire.STACK_NAME_RULE}).")
    if not wire.is_valid_site_name(site):
        raise BadBackupRequest(f"{site!r} is not a valid site name ({wire.SITE_NAME_RULE}).")


def open_site_dir(base_path: str, stack: str, site: str, *, create: bool = False) -> int:
    """An fd of <base>/<stack>/<site>, reached without following a symlink below base_path.

    base_path itself may be a symlink (the operator's choice); a stack or site directory that is
    a symlink is refused, so a published name can never resolve outside its own directory.
    """
    check_names(stack, site)
    if create:
        make_dir(base_path)
    none_yet = f"No backups of {site} on {stack} yet."
    try:
        fd = os.open(base_path, DIR_FLAGS)
    except FileNotFoundError:
        raise BackupNotFound(none_yet) from None

    def refuse(_walked: str, exc: OSError) -> Exception | None:
        if isinstance(exc, FileNotFoundError):
            return BackupNotFound(none_yet)
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return BackupNotFound(
                f"The backup directory of {site} on {stack} is not a plain directory "
                f"(a symlink or a file); refusing to use it."
            )
        return None

    return descend(fd, (stack, site), refuse, create=create)


def make_dir(path: str) -> None:
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_dir(parent)
    try:
        os.mkdir(path, 0o750)
    except FileExistsError:
        return
    os.chmod(path, 0o750)


@contextmanager
def locked(dir_fd: int, what: str, *, wait: float) -> Iterator[None]:
    """flock on <site dir>/.lock: one publish or retention pass per site at a time (released on crash)."""
    try:
        lock_fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
    except OSError as exc:
        raise BackupError(f"cannot open the lock file of {what}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BackupError(
                        f"another backup or clean-up of {what} is still running; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(lock_fd)


def is_plain_file(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def scandir_dirs(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
