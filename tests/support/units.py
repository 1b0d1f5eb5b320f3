"""The environment the systemd units give a service, so tests and benchmarks run it the way it is deployed."""

from __future__ import annotations

import os
import re
from pathlib import Path

UNITS = Path(__file__).resolve().parent.parent.parent / "packaging" / "systemd"


def unit_settings(unit: str) -> dict[str, str]:
    """The unit's own ``Environment=`` settings that need no install-time value (PYTHONOPTIMIZE)."""
    text = (UNITS / f"{unit}.service").read_text()
    return {
        key: value
        for key, value in re.findall(r"^Environment=([A-Z_]+)=(.*)$", text, re.MULTILINE)
        if "@" not in value and "%" not in value
    }


def service_env(unit: str, *, keep_python: bool = True, base: dict[str, str] | None = None) -> dict[str, str]:
    """os.environ (or ``base``) with the unit's settings on top.

    ``keep_python=False`` also drops the caller's PYTHON* variables, as a unit does: PYTHONPATH would make
    a zipapp import a checkout's code, PYTHONDONTWRITEBYTECODE would make every warm start compile again.
    The suite's processes keep them (PYTHONPATH is how a worktree's code runs in its processes)."""
    env = dict(os.environ if base is None else base)
    if not keep_python:
        env = {key: value for key, value in env.items() if not key.startswith("PYTHON")}
    env.update(unit_settings(unit))
    return env
