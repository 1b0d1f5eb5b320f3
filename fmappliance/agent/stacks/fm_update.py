"""Updating an fm bench: what runs before is recorded so that a failed update can name it.

Every app's commit comes from ``bench version --format json``; the bench's application code is updated
in place and cannot be rolled back by the agent, so a failed update restores the databases from their
``pre-update`` backups and the job names the commits to check out.
"""

from __future__ import annotations

import json
import re

from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.stacks.fm import Tools, bench_argv, refuse_migration


def version_rows(output: str) -> list[dict] | None:
    """The app rows of `bench version --format json`: frappe prints `json.dumps(data, indent=4)`, an array
    over many lines, and warnings may come first; the last array of objects in the output is taken."""
    decoder = json.JSONDecoder()
    found = None
    for match in re.finditer(r"^[ \t]*\[", output, re.MULTILINE):
        try:
            value, _end = decoder.raw_decode(output, match.end() - 1)
        except ValueError:
            continue
        if isinstance(value, list) and all(isinstance(row, dict) for row in value):
            found = value
    return found


def record_commits(ctx: JobContext, tools: Tools, stack: dict, timeout: float) -> dict[str, str]:
    """app -> its commit, from `bench version --format json` in the bench; an app that is not a git
    checkout (commit "") is recorded by its version instead, and the job says so."""
    argv = bench_argv(tools.docker, stack, "version", "--format", "json")
    result = ctx.run(
        argv,
        timeout=timeout,
        cwd=stack["path"],
        label="bench version --format json",
        inspect=refuse_migration(tools, stack),
    )
    rows = version_rows(result.output) or []
    commits: dict[str, str] = {}
    without: list[str] = []
    for row in rows:
        app = str(row.get("app") or "")
        if not app:
            continue
        commit, version = str(row.get("commit") or ""), str(row.get("version") or "")
        if commit:
            commits[app] = commit
        else:
            commits[app] = f"version {version or 'unknown'} (no commit: not a git checkout)"
            without.append(app)
    if not commits:
        raise StepFailed("bench version listed no apps; the update was not started")
    ctx.log("recorded app commits: " + ", ".join(f"{a} {c}" for a, c in sorted(commits.items())))
    if without:
        ctx.log(
            "no commit to name for "
            + ", ".join(sorted(without))
            + " (not a git checkout); recorded by version, the update goes ahead"
        )
    return commits
