"""How the agent talks to each stack type: one ``StackDriver`` class per type (base.py has the protocol).

``ComposeStack`` (compose.py) drives docker compose (frappe_docker projects), ``FmStack`` (fm.py)
Frappe Manager benches; each builds argv lists, parses output, and runs an action's steps through the
job's context (only runner.py starts processes).  The restore half of each type is its ``SiteOps``
(compose_restore.py, fm_restore.py); what both read the same way is in compose_output.py (docker
compose's output) and bench_backup.py (bench backup's).  ``for_stack`` makes the driver of
a stack, so no caller outside this package branches on the stack type.  The model is Radicale's
``storage`` package: a base protocol, one implementation per kind, chosen once from the config.
"""

from __future__ import annotations

from collections.abc import Callable

from fmappliance.agent.stacks.base import (
    BackupRun,
    Command,
    OpsFailed,
    RunningState,
    SiteOps,
    SitesUnavailable,
    StackDriver,
    StackUnsupported,
)
from fmappliance.agent.stacks.compose import ComposeStack
from fmappliance.agent.stacks.fm import FmStack

__all__ = [
    "BackupRun",
    "Command",
    "ComposeStack",
    "FmStack",
    "OpsFailed",
    "RunningState",
    "SiteOps",
    "SitesUnavailable",
    "StackDriver",
    "StackUnsupported",
    "for_stack",
]

#: stack "type" in the config -> its driver (the config schema allows only these).
_BY_TYPE: dict[str, Callable[[dict], StackDriver]] = {driver.kind: driver for driver in (FmStack, ComposeStack)}


def for_stack(stack: dict) -> StackDriver:
    """The driver of this stack (its config section)."""
    return _BY_TYPE[stack["type"]](stack)
