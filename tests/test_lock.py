"""packaging/requirements.lock pins exactly the runtime dependencies pyproject.toml declares, each to a
version its range allows and with hashes, so `make build` installs nothing else."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from the lock's `name==version \\ --hash=sha256:...` entries."""
    text = (REPO / "packaging" / "requirements.lock").read_text()
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z])", "\n" + text):
        match = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s\\]+)", block)
        if match:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            entries[canonicalize_name(match.group(1))] = (match.group(2), hashes)
    return entries


def test_the_lock_pins_every_runtime_dependency_and_nothing_else():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {canonicalize_name(Requirement(d).name): Requirement(d) for d in declared}
    pins = locked()
    assert set(pins) == set(wanted)
    for name, (version, hashes) in pins.items():
        assert wanted[name].specifier.contains(version), f"{name}=={version} is outside {wanted[name]}"
        assert hashes, f"{name} has no hashes"


def test_the_lock_follows_its_input_file():
    source = (REPO / "packaging" / "requirements.in").read_text()
    pins = {
        canonicalize_name(m.group(1)): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", source, re.MULTILINE)
    }
    assert pins == {name: version for name, (version, _) in locked().items()}
