"""Templates from the package (``fmappliance.assets/templates``), each compiled at its first use.

Found next to the ``fmappliance.assets`` package, never through TEMPLATE_PATH (relative to the
working directory, docs/pitfalls.md), so they work from a checkout, a wheel and the shiv zipapp
(which unpacks itself) alike.  Not through importlib.resources: it loads zipfile and its readers
for about 1 MB of resident memory the dashboard would keep for nothing.
Templates include each other through ``partial(name, **values)`` (already escaped
output, hence ``{{!partial(...)}}``); data is always passed as values, never as source.

Compiled when first rendered, not at start: all of them compiled cost about 0.7 MB resident
that a dashboard at rest (and one showing only its usual pages) never uses
(tests/benchmarks/bench_startup.py).  A compiled template keeps only its code object.
"""

from __future__ import annotations

import importlib.util
import threading
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
        #: name -> file; listed at start, so a missing assets directory stops the start, not a page.
        self._files = {entry.name[:-4]: entry for entry in root.iterdir() if entry.name.endswith(".tpl")}
        self._compiled: dict[str, bottle.SimpleTemplate] = {}
        self._lock = threading.Lock()

    def _template(self, name: str) -> bottle.SimpleTemplate:
        template = self._compiled.get(name)
        if template is None:
            with self._lock:  # the first requests arrive together: compile each template once
                template = self._compiled.get(name)
                if template is None:
                    template = self._compile(self._files[name])
                    self._compiled[name] = template
        return template

    @staticmethod
    def _compile(path: Path) -> bottle.SimpleTemplate:
        template = bottle.SimpleTemplate(source=path.read_text(encoding="utf-8"), name=path.name)
        _ = template.co  # compiled here, under the lock
        # Rendering needs only the code object: drop the source and its Python translation.
        template.__dict__.pop("code", None)
        template.source = ""
        return template

    def render(self, template: str, **values) -> str:
        values.setdefault("partial", self.render)
        return self._template(template).render(**values)
