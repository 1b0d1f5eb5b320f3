"""How the agent talks to each stack type, one module per type with the same functions.

``compose`` knows docker compose (frappe_docker projects), ``fm`` knows Frappe Manager benches.
Each builds argv lists, parses output, and runs an action's steps through the job's context
(``run_action``, ``update``, ``collect_backup_files``); only runner.py starts processes.
``for_stack`` picks the module for a stack, so callers never branch on the stack type.
"""

from __future__ import annotations

from types import ModuleType

from fmappliance.agent.stacks import compose, fm

#: stack "type" in the config -> the module that knows it (the config schema allows only these).
_BY_TYPE: dict[str, ModuleType] = {"fm": fm, "compose": compose}


def for_stack(stack: dict) -> ModuleType:
    """The module that knows this stack's type."""
    return _BY_TYPE[stack["type"]]
