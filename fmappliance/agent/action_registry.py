"""Which code runs each action: ``@handles("name")`` next to that code, in fmappliance/agent/handlers/.

An action's row in fmappliance/actions_table.py says what it is (scope, fields, timeout, messages);
its handler says what it does, in two steps:

- ``plan(actions, request)`` (optional), while the API request waits: check the names against the
  inventory and the backups, fill in ``request.site`` and ``request.options``; raise
  :class:`~fmappliance.agent.errors.AgentError` (ActionRejected) to refuse.  Without a plan, a site
  action's site is checked against the inventory.
- ``run(actions, ctx, request)``, in the job's thread: the work; returns the job's result (or None).

Every module of the handlers package is imported once, at the first lookup, so a new action is a
new module there plus its table row; :func:`check_complete` (run when the agent starts) refuses a
table row without a handler and a handler without a row.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fmappliance.actions_table import SPECS

if TYPE_CHECKING:
    from fmappliance.agent.actions import Actions
    from fmappliance.agent.jobs import JobContext


@dataclass
class Request:
    """One action request on its way to a job: what the plan checked and filled in, what the run uses."""

    action: str
    stack_name: str
    stack: dict
    site: str | None
    timeout: float
    options: dict[str, Any] = field(default_factory=dict)


Plan = Callable[["Actions", Request], None]
Run = Callable[["Actions", "JobContext", Request], Any]


@dataclass(frozen=True)
class Handler:
    run: Run
    plan: Plan | None = None


_HANDLERS: dict[str, Handler] = {}
_loaded = False
_load_lock = threading.Lock()


def handles(*names: str, plan: Plan | None = None) -> Callable[[Run], Run]:
    """Register the decorated function as the run step of ``names`` (and ``plan`` as their plan step)."""

    def register(run: Run) -> Run:
        for name in names:
            if name not in SPECS:
                raise RuntimeError(f"@handles({name!r}): the action has no row in fmappliance/actions_table.py")
            if name in _HANDLERS:
                raise RuntimeError(f"@handles({name!r}): the action already has a handler")
            _HANDLERS[name] = Handler(run, plan)
        return run

    return register


def _load() -> None:
    global _loaded
    with _load_lock:
        if _loaded:
            return
        from fmappliance.agent import handlers

        # A plain listing, not pkgutil (which stays loaded for nothing): the package is a directory
        # in a checkout, a wheel and the unpacked shiv zipapp alike.
        for directory in handlers.__path__:
            for entry in sorted(os.listdir(directory)):
                if entry.endswith(".py") and entry != "__init__.py":
                    importlib.import_module(f"{handlers.__name__}.{entry[:-3]}")
        _loaded = True


def handler_of(action: str) -> Handler:
    """The handler of a table action (KeyError for anything else)."""
    _load()
    return _HANDLERS[action]


def check_complete() -> None:
    """Every table row has a handler (the registration itself refuses handlers without a row)."""
    _load()
    missing = sorted(set(SPECS) - set(_HANDLERS))
    if missing:
        raise RuntimeError("actions without a handler in fmappliance/agent/handlers: " + ", ".join(missing))
