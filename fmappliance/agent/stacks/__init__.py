"""How the agent talks to each stack type: one ``StackDriver`` class per type (base.py has the protocol).

``ComposeStack`` (compose_stack.py) drives docker compose (frappe_docker projects), ``FmStack``
(fm_stack.py) Frappe Manager benches; each builds argv lists, parses output, and runs an action's
steps through the job's context (only runner.py starts processes).  ``for_stack`` makes the driver of
a stack, so no caller outside this package branches on the stack type.  The model is Radicale's
``storage`` package: a base protocol, one implementation per kind, chosen once from the config.
"""

from __future__ import annotations

from collections.abc import Callable

from fmappliance.agent.stacks.base import (
    Command,
    OpsFailed,
    RunningState,
    SiteOps,
    SitesUnavailable,
    StackDriver,
    StackUnsupported,
)
from fmappliance.agent.stacks.compose_stack import ComposeStack
from fmappliance.agent.stacks.fm_stack import FmStack

__all__ = [
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
