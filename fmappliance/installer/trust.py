"""Whether a path can be trusted for the privileged agent: nobody else can change it.

The agent runs with docker rights (root-equivalent).  A compose file or an ``fm`` binary it
runs must therefore be changeable by nobody but root and the agent's own user: the file and
every directory above it are owned by one of them and are not group- or world-writable.

One exception: a root-owned directory with the sticky bit (``/tmp``).  Others may create
entries there, but cannot rename or remove ours, so a path below it that passes every other
check stays ours.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _components(path: Path) -> list[Path]:
    return [path, *path.parents]


def _problem(part: Path, st: os.stat_result, owners: set[int], names: dict[int, str]) -> str | None:
    if st.st_uid not in owners:
        return f"{part} belongs to {user_name(st.st_uid)}, not to {' or '.join(names[u] for u in sorted(owners))}"
    mode = st.st_mode
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX and st.st_uid == 0:
        return None
    if mode & stat.S_IWOTH:
        return f"{part} is writable by every user"
    if mode & stat.S_IWGRP:
        return f"{part} is writable by the group {_group_name(st.st_gid)}"
    return None


def untrusted_reason(path: str | os.PathLike, owner_uid: int | None) -> str | None:
    """None when ``path`` (and every directory above it, also through symlinks) is safe; else why not.

    ``owner_uid`` is the agent user's uid (None: a user that does not exist yet, so root only).
    """
    owners = {0} if owner_uid is None else {0, owner_uid}
    names = {u: user_name(u) for u in owners}
    literal = Path(os.path.abspath(path))
    try:
        real = Path(os.path.realpath(literal, strict=True))
    except OSError as exc:
        return f"{literal}: {exc.strerror}"
    # The path as written (whose symlinks could be replaced by whoever may write their
    # directory) and the file it resolves to.
    checked: list[Path] = []
    for part in _components(literal)[1:] + _components(real):
        if part in checked:
            continue
        checked.append(part)
        try:
            st = os.stat(part)
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        problem = _problem(part, st, owners, names)
        if problem:
            return problem
    return None


def user_name(uid: int) -> str:
    """A user's name for a message (``uid N`` when the uid has no name)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"
