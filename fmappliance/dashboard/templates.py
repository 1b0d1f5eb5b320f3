"""Templates from the package (``fmappliance.assets/templates``), compiled once at start.

Found next to the ``fmappliance.assets`` package, never through TEMPLATE_PATH (relative to the
working directory, docs/pitfalls.md), so they work from a checkout, a wheel and the shiv zipapp
(which unpacks itself) alike.  Not through importlib.resources: it loads zipfile and its readers
for about 1 MB of resident memory the dashboard would keep for nothing.
Templates include each other through ``partial(name, **values)`` (already escaped
output, hence ``{{!partial(...)}}``); data is always passed as values, never as source.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import bottle


def asset_dir(kind: str) -> Path:
    """``templates`` or ``static`` of the installed ``fmappliance.assets`` package (found, not imported)."""
    spec = importlib.util.find_spec("fmappliance.assets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the fmappliance.assets package is missing: reinstall fmappliance")
    return Path(list(spec.submodule_search_locations)[0]) / kind


class Templates:
    def __init__(self):
        root = asset_dir("templates")
        self._compiled: dict[str, bottle.SimpleTemplate] = {}
        for entry in root.iterdir():
            if entry.name.endswith(".tpl"):
                template = bottle.SimpleTemplate(source=entry.read_text(encoding="utf-8"), name=entry.name)
                _ = template.co  # compile now: the first request should not pay for it
                self._compiled[entry.name[:-4]] = template

    def render(self, template: str, **values) -> str:
        values.setdefault("partial", self.render)
        return self._compiled[template].render(**values)
