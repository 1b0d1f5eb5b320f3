"""Move an installer-made config from TCP to the Unix sockets new installs get.

Only what the installer itself once wrote is moved: a section listening on loopback at the
installer's old port (agent 127.0.0.1:9100, dashboard 127.0.0.1:8000) with no ``socket``
key.  Anything else (another address or port, or ``socket: ""``) is an operator's explicit
TCP setup and stays as it is.  The edit is textual (comments and order survive): two lines
after the section's header.  The previous file is kept beside it; the new one is written
under a temporary name, fsynced and renamed over the old.
"""

from __future__ import annotations

import os
import re
import shutil

INSTALLER_TCP = {"agent": ("127.0.0.1", 9100), "dashboard": ("127.0.0.1", 8000)}
LOOPBACK = {"127.0.0.1", "localhost"}
BACKUP_SUFFIX = ".pre-sockets"


def sections_to_move(data: dict) -> list[str]:
    moved = []
    for name, (_, port) in INSTALLER_TCP.items():
        section = data.get(name)
        if not isinstance(section, dict) or "socket" in section:
            continue
        if str(section.get("listen", "127.0.0.1")) in LOOPBACK and section.get("port", port) == port:
            moved.append(name)
    return moved


def migrate_text(text: str, sockets: dict[str, tuple[str, str]], names: list[str]) -> tuple[str, list[str]]:
    """Insert ``socket``/``socket_group`` under each named block-style section; returns (text, moved)."""
    lines = text.splitlines(keepends=True)
    moved = []
    for name in names:
        found = find_section(lines, name)
        if found is None:
            continue
        i, indent = found
        path, group = sockets[name]
        lines[i + 1 : i + 1] = [
            f'{indent}socket: "{path}"  # moved from TCP by install.sh\n',
            f'{indent}socket_group: "{group}"\n',
        ]
        moved.append(name)
    return "".join(lines), moved


def find_section(lines: list[str], name: str) -> tuple[int, str] | None:
    """(index of the block-style ``name:`` header line, the indent of its first key) or None."""
    for i, line in enumerate(lines):
        if re.fullmatch(rf"{name}:[ \t]*(#.*)?\r?\n?", line):
            for following in lines[i + 1 :]:
                match = re.match(r"([ \t]+)\S", following)
                if match:
                    return i, match.group(1)
            return i, "  "
    return None


def migrate_config(path: str, sockets: dict[str, tuple[str, str]]) -> list[str]:
    """Migrate the config at ``path`` in place; returns the sections moved to sockets."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    data = yaml.safe_load(text) or {}
    names = sections_to_move(data if isinstance(data, dict) else {})
    if not names:
        return []
    new_text, moved = migrate_text(text, sockets, names)
    if not moved:
        return []
    shutil.copy2(path, path + BACKUP_SUFFIX)
    _replace(path, new_text)
    return moved


def add_dashboard_key(path: str, key: str, value: str) -> bool:
    """Add ``dashboard.<key>: value`` to the config at ``path`` unless the key is there (or the
    dashboard section is not block-style); True when the file changed.  Same textual, atomic
    edit as the socket move, so comments and order survive."""
    import json

    import yaml

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    data = yaml.safe_load(text) or {}
    section = data.get("dashboard") if isinstance(data, dict) else None
    if not isinstance(section, dict) or key in section:
        return False
    lines = text.splitlines(keepends=True)
    found = find_section(lines, "dashboard")
    if found is None:
        return False
    i, indent = found
    lines.insert(i + 1, f"{indent}{key}: {json.dumps(value)}  # added by install.sh\n")
    _replace(path, "".join(lines))
    return True


def add_fleet_hub(path: str, listen: str, address: str) -> bool:
    """Make the config at ``path`` a fleet hub's (install.sh --fleet-hub): ``fleet.listen`` and
    ``fleet.address`` added when the config sets neither; a config that already names a hub is
    left as the operator wrote it.  True when the file changed (textual, atomic, comments kept)."""
    import json

    import yaml

    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    data = yaml.safe_load(text) or {}
    section = data.get("fleet") if isinstance(data, dict) else None
    if isinstance(section, dict) and (section.get("listen") or section.get("address")):
        return False
    added = f"  listen: {json.dumps(listen)}  # added by install.sh --fleet-hub\n  address: {json.dumps(address)}\n"
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.fullmatch(r"fleet:[ \t]*(#.*)?\r?\n?", line):
            if section is not None and not isinstance(section, dict):
                return False  # "fleet: {}" or the like: not a block to add to
            lines.insert(i + 1, added)
            _replace(path, "".join(lines))
            return True
    if section is not None:
        return False  # a flow-style fleet section: the operator's to edit
    if text and not text.endswith("\n"):
        text += "\n"
    _replace(path, text + "fleet:\n" + added)
    return True


def _replace(path: str, text: str) -> None:
    """Write ``text`` over ``path`` atomically (temporary name, fsync, rename), keeping its mode and owner."""
    st = os.stat(path)
    temp = path + ".fm-new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, st.st_mode & 0o777)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chown(temp, st.st_uid, st.st_gid)
    os.rename(temp, path)
