"""The layout is the architecture: two wings (agent, dashboard) over a small shared core, data flowing one way.

- The core (``fmappliance/*.py``) imports only the core: it is what both wings share.
- The agent never imports the dashboard, and the dashboard never imports the agent: they meet only on the wire.
- The installer lays both down; it may use the core and the dashboard's password hashing, and only the agent's
  command-line entry point (``fm-agent.pyz installer …``) may reach into the installer.

Checked from the source (every ``import``, also function-local ones), so a new import that breaks the rule fails
here before it becomes a cycle or ships the dashboard's code inside the privileged agent.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fmappliance"

# wing -> the wings it may import (besides itself and the core)
ALLOWED = {
    "core": set(),
    # fleet: what both sides of the fleet link share (tokens, certificates); it imports only the core.
    "agent": {"fleet"},
    "dashboard": {"fleet"},
    "fleet": set(),
    "installer": {"dashboard.passwords"},
}
# Single modules allowed one more edge, and why.
ENTRY_POINTS = {
    # `fm-agent.pyz installer …` runs the installer's helpers from the one zipapp the installer ships.
    ("agent/__main__.py", "installer"),
}


def _wing(relative: Path) -> str:
    return relative.parts[0] if len(relative.parts) > 1 else "core"


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "fmappliance":
                found.extend(f"fmappliance.{alias.name}" for alias in node.names)
            else:
                found.append(node.module)
    return [name for name in found if name == "fmappliance" or name.startswith("fmappliance.")]


def _target_wing(package: Path, module: str) -> tuple[str, str]:
    """('agent', 'agent.jobs') for 'fmappliance.agent.jobs'; core modules are ('core', 'names')."""
    rest = module.split(".", 1)[1] if "." in module else ""
    head = rest.split(".", 1)[0]
    if (package / head).is_dir():
        return head, rest
    return "core", rest


def _violations(package: Path = PACKAGE) -> list[str]:
    problems = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        wing = _wing(relative)
        for module in _imported_modules(path):
            target, dotted = _target_wing(package, module)
            if target in ("core", wing):
                continue
            if any(dotted == allowed or dotted.startswith(allowed + ".") for allowed in ALLOWED.get(wing, ())):
                continue
            if (relative.as_posix(), target) in ENTRY_POINTS:
                continue
            problems.append(f"{relative} ({wing}) imports {module} ({target})")
    return problems


def test_wings_import_only_the_core_and_themselves():
    assert _violations() == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The rule is not vacuous: a dashboard module importing the agent is reported."""
    fake = tmp_path / "fmappliance"
    (fake / "dashboard").mkdir(parents=True)
    (fake / "agent").mkdir()
    (fake / "names.py").write_text("")
    (fake / "dashboard" / "pages.py").write_text("def f():\n    from fmappliance.agent import jobs\n")
    (fake / "agent" / "jobs.py").write_text("from fmappliance import names\n")
    assert _violations(fake) == ["dashboard/pages.py (dashboard) imports fmappliance.agent (agent)"]
