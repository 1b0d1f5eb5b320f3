"""How the agent talks to each stack type, one module per type with the same functions.

``compose`` knows docker compose (frappe_docker projects), ``fm`` knows Frappe Manager benches.
Each builds argv lists, parses output, and runs an action's steps through the job's context
(``run_action``, ``update``, ``collect_backup_files``); only runner.py starts processes.
``for_stack`` picks the module for a stack, so callers never branch on the stack type.
"""

from __future__ import annotations

from types import ModuleType
from typing import NamedTuple

from fmappliance.agent.stacks import compose, fm

#: stack "type" in the config -> the module that knows it (the config schema allows only these).
_BY_TYPE: dict[str, ModuleType] = {"fm": fm, "compose": compose}


def for_stack(stack: dict) -> ModuleType:
    """The module that knows this stack's type."""
    return _BY_TYPE[stack["type"]]


# --------------------------------------------------------------------------------------------
# The stack-specific half of a restore: each module's ``SiteOps`` class has the same methods (how
# bench is run, where the parts go so bench can read them, where the MariaDB root password lives
# and how to reach the database as root, the bench container's addresses, how a site config is changed
# without an argv), so restore.py and dbaccess.py never know the stack type.
# --------------------------------------------------------------------------------------------


class Command(NamedTuple):
    """One command to run: its argv, complete environment (None: the runner's minimal one), cwd, and what
    its stdin gets (None: /dev/null) -- the way SQL that names a password reaches mariadb."""

    argv: list[str]
    env: dict | None
    cwd: str
    input: bytes | None = None


class StackUnsupported(Exception):
    """This stack type cannot do what was asked; an operator message."""


class OpsFailed(Exception):
    """A stack-specific step could not be done; the text is an operator message without secrets."""


def site_ops_class(stack: dict):
    return _BY_TYPE[stack["type"]].SiteOps


def site_ops(stack: dict, binaries: dict, state_dir: str):
    """The SiteOps of ``stack``; ``binaries`` maps "docker"/"fm" to full paths (or None when missing)."""
    return site_ops_class(stack)(stack, binaries, state_dir)
