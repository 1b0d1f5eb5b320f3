"""Whether an fm bench needs `fm migrate`, as Frappe Manager 0.20 decides it.

FM compares the bench's `bench_config.toml` `[migration_state] migrated_to` with its own version
(`fm --version`); when the bench is older, every bench command but `stop` and `delete` prints
"Bench migration required: <bench> (vA → vB)" and exits 0 having done nothing (docs/doubles.md).
The agent turns both the notice and the comparison into one sentence for the operator.
"""

from __future__ import annotations

import logging
import re
import threading
import tomllib
from pathlib import Path

from fmappliance.agent.runner import run_command

log = logging.getLogger(__name__)

MARKER = "Bench migration required"
#: fm 0.20 prints `Bench migration required: <bench> (v0.19.0 → v0.20.0)` (rich may wrap it).
_NOTICE = re.compile(r"Bench migration required:\s*\S+\s*\(v?([0-9][^\s)]*)\s*\S+\s*v?([0-9][^\s)]*)\)")
#: `fm --version` prints the bare version on a line of its own (after fm's rename warning, which names 1.0.0).
_VERSION_LINE = re.compile(r"^\s*v?(\d+(?:\.\d+)+)\S*\s*$")
_versions: dict[str, str] = {}
_versions_lock = threading.Lock()


def sentence(bench: str, old: str, new: str) -> str:
    return (
        f'{bench} needs "fm migrate {bench}" (its files were written by Frappe Manager v{old}, this is v{new}); '
        "run it on the server, then retry."
    )


def notice_in(output: str) -> tuple[str | None, str | None] | None:
    """None when fm's output has no migration notice, else the versions it names (None when unreadable)."""
    if MARKER not in output:
        return None
    match = _NOTICE.search(output)
    return (match.group(1), match.group(2)) if match else (None, None)


def fm_version(fm: str, cwd: str, env: dict) -> str | None:
    """What `fm --version` prints, asked once per fm binary and remembered (fm is upgraded with the
    appliance, which restarts the agent); None when it cannot be told (asked again next time)."""
    with _versions_lock:
        if fm in _versions:
            return _versions[fm]
    result = run_command([fm, "--version"], timeout=60, cwd=cwd, env=env, parsed_only=True)
    version = None
    if result.ok:
        for line in reversed(result.output.splitlines()):
            match = _VERSION_LINE.match(line)
            if match:
                version = match.group(1)
                break
    if version is None:
        log.warning("could not read fm's version from `%s --version` (exit code %s)", fm, result.exit_code)
        return None
    with _versions_lock:
        _versions[fm] = version
    return version


def migrated_to(bench_dir: str) -> str | None:
    """`[migration_state] migrated_to` of the bench's bench_config.toml, as FM reads it: a file without it
    (or one FM could not read) counts as 0.0.0; None when there is no bench_config.toml to go by."""
    try:
        with open(Path(bench_dir) / "bench_config.toml", "rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError):
        return "0.0.0"
    state = doc.get("migration_state")
    value = state.get("migrated_to") if isinstance(state, dict) else None
    return value if isinstance(value, str) and value.strip() else "0.0.0"


def _key(text: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", text.strip().lstrip("v"))
    return tuple(int(p) for p in match.group(0).split(".")) if match else (0,)


def reason(bench: str, bench_dir: str, fm: str, cwd: str, env: dict) -> str | None:
    """The sentence when the bench's migrated_to is older than fm's version, else None."""
    old = migrated_to(bench_dir)
    if old is None:
        return None
    new = fm_version(fm, cwd, env)
    if new is None or _key(old) >= _key(new):
        return None
    return sentence(bench, old, new)
