"""Backups made elsewhere, dropped into ``<backups.base_path>/_import/``, listed and published.

An import set is the files bench wrote for one backup, named as bench names them:
``{%Y%m%d_%H%M%S}-{site slug}-database.sql.gz`` (required), ``-files.tar``/``.tgz``,
``-private-files.tar``/``.tgz``, ``-site_config_backup.json`` (each may carry bench's ``-enc``).
The set's name is everything before ``-database``.  Publishing one verifies it exactly like a fresh
backup (BackupStore.publish) under the label ``imported``; a set that fails is left where it is.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass

from fmappliance.agent.backups import BackupError, bench_names
from fmappliance.agent.errors import AgentError
from fmappliance.agent.jobs import StepFailed
from fmappliance.wire import IMPORT_SET_NAME

log = logging.getLogger(__name__)

IMPORT_DIR = "_import"
#: What an import set's name looks like (the API checks a requested name against it).
SET_NAME = IMPORT_SET_NAME  # the name import_backup accepts (fmappliance.wire)


class ImportNotFound(AgentError):
    """No usable import set of that name: a 404, the text says why."""

    def __init__(self, message: str):
        super().__init__(404, message)


@dataclass
class ImportSet:
    name: str
    files: dict  # part -> path
    sizes: dict  # file name -> size
    problems: list


def import_dir(base_path: str) -> str:
    return os.path.join(os.path.abspath(base_path), IMPORT_DIR)


def _scan(base_path: str) -> dict[str, ImportSet]:
    directory = import_dir(base_path)
    sets: dict[str, ImportSet] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return {}
    for entry in entries:
        match = bench_names.parse(entry.name)
        if not match:
            continue
        found = sets.setdefault(match.group("set"), ImportSet(match.group("set"), {}, {}, []))
        try:
            st = os.lstat(entry.path)
        except OSError:
            continue
        found.sizes[entry.name] = st.st_size
        if not stat.S_ISREG(st.st_mode):
            found.problems.append(f"{entry.name} is not a plain file (a symlink or a directory); it is not read")
            continue
        if match.group("kind") == bench_names.PARTIAL_DATABASE:
            found.problems.append(
                f"{entry.name} is a partial backup (bench backup --only/--exclude); a restore needs a full one"
            )
            continue
        part = bench_names.PART_OF_KIND[match.group("kind")]
        if part in found.files:
            found.problems.append(
                f"two files for the {part} part ({os.path.basename(found.files[part])}, {entry.name})"
            )
            continue
        if st.st_size == 0:
            found.problems.append(f"{entry.name} is empty")
        found.files[part] = entry.path
    for found in sets.values():
        if "database" not in found.files and not any("partial" in p for p in found.problems):
            found.problems.append(f"no database dump: {found.name}-database.sql.gz is missing")
        encrypted = any("-enc." in os.path.basename(p) for p in found.files.values())
        if encrypted and "site_config" not in found.files:
            found.problems.append("the set is encrypted but has no site config backup, which holds its key")
    return sets


def list_imports(base_path: str) -> list[dict]:
    """The import sets in ``_import/``, in the API's shape (problems found without reading contents)."""
    return [
        {
            "name": s.name,
            "files": [{"name": n, "size": size} for n, size in sorted(s.sizes.items())],
            "problems": list(s.problems),
        }
        for s in sorted(_scan(base_path).values(), key=lambda s: s.name)
    ]


def find_import_set(base_path: str, name) -> ImportSet:
    if not isinstance(name, str) or not SET_NAME.fullmatch(name):
        raise ImportNotFound("That is not an import set name (like 20261125_020003-erp_example_com).")
    found = _scan(base_path).get(name)
    if found is None:
        raise ImportNotFound(f"There is no import set {name} in {import_dir(base_path)}.")
    return found


def publish_import(ctx, store, stack: str, site: str, import_set: ImportSet) -> dict:
    """Verify and publish the set as a backup of ``site`` labelled ``imported``; remove the originals after."""
    current = _scan(store.base_path).get(import_set.name) or import_set
    if current.problems:
        raise StepFailed(
            f"The import set {current.name} was refused and left in place: " + "; ".join(current.problems) + "."
        )
    ctx.log(
        f"== verifying and publishing {current.name} as a backup of {site} on {stack}: "
        + ", ".join(os.path.basename(p) for p in current.files.values())
    )
    try:
        manifest = store.publish(stack, site, current.files, label="imported")
    except BackupError as exc:
        raise StepFailed(f"The import set {current.name} was refused and left in place: {exc}.") from None
    for path in current.files.values():
        try:
            os.unlink(path)
        except OSError as exc:
            ctx.log(f"could not remove {path} after publishing it: {exc.strerror}")
    ctx.log(f"published as backup {manifest['id']}; the imported files were removed from {import_dir(store.base_path)}")
    ctx.message = f"Import {current.name} verified and published as backup {manifest['id']} of {site} on {stack}."
    return manifest
