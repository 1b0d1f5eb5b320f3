"""Templates from the package (``fmappliance.assets/templates``), compiled once at start.

Loaded through importlib.resources, never TEMPLATE_PATH (relative to the working
directory, docs/pitfalls.md), so they work from a checkout, a wheel and a zipapp alike.
Templates include each other through ``partial(name, **values)`` (already escaped
output, hence ``{{!partial(...)}}``); data is always passed as values, never as source.
"""

from __future__ import annotations

import importlib.resources

import bottle


class Templates:
    def __init__(self):
        root = importlib.resources.files("fmappliance.assets") / "templates"
        self._compiled: dict[str, bottle.SimpleTemplate] = {}
        for entry in root.iterdir():
            if entry.name.endswith(".tpl"):
                template = bottle.SimpleTemplate(source=entry.read_text(encoding="utf-8"), name=entry.name)
                _ = template.co  # compile now: the first request should not pay for it
                self._compiled[entry.name[:-4]] = template

    def render(self, template: str, **values) -> str:
        values.setdefault("partial", self.render)
        return self._compiled[template].render(**values)
