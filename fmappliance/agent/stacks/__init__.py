"""How the agent talks to each stack type: argv builders and output parsing.

``compose`` knows docker compose (frappe_docker projects), ``fm`` knows Frappe Manager
benches.  Both only build argv lists and parse output; running them is runner.py's job.

Each module also has a ``SiteOps`` class with the same methods, the stack-specific half of a
restore (how bench is run, where the parts go so bench can read them, where the MariaDB root
password lives and how to reach the database): restore.py and dbaccess.py use it without knowing
the stack type.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    """One command to run: its argv, complete environment (None: the runner's minimal one) and cwd."""

    argv: list[str]
    env: dict | None
    cwd: str


class StackUnsupported(Exception):
    """This stack type cannot do what was asked (e.g. create a site in an fm bench); an operator message."""


class OpsFailed(Exception):
    """A stack-specific step could not be done; the text is an operator message without secrets."""


def site_ops_class(stack: dict):
    from fmappliance.agent.stacks import compose, fm

    return {"compose": compose.SiteOps, "fm": fm.SiteOps}[stack["type"]]


def site_ops(stack: dict, binaries: dict, state_dir: str):
    """The SiteOps of ``stack``; ``binaries`` maps "docker"/"fm" to full paths (or None when missing)."""
    return site_ops_class(stack)(stack, binaries, state_dir)
