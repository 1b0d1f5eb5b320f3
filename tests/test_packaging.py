"""Every package of the source tree ships in the zipapps.

pyproject.toml lists the packages by hand (setuptools' `packages`); a new sub-package missing there is left
out of the wheel, and the zipapp then fails at start (this happened to fmappliance.agent.handlers).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_under_fmappliance_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "fmappliance").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
