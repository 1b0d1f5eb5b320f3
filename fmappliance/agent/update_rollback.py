"""An update that undoes itself when it fails.

Before anything changes, what runs now is recorded: compose stacks -> the repo digest of every
service's image (``compose images`` + ``docker image inspect``); fm stacks -> every app's commit
(``bench version --format json``).  After pull/up/migrate comes a health check (every long-running
service up, every site answers ``list-apps``).  If any step fails, a compose stack is pinned back to
the recorded digests with a generated compose override (JSON is YAML; the old images were never
pruned) *before* the databases are restored from their ``pre-update`` backups; an fm stack gets its
databases back and the job names the commits, because its application code cannot be rolled back
by the agent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile

from fmappliance.agent.jobs import StepFailed
from fmappliance.agent.stacks import compose as compose_stack
from fmappliance.agent.stacks import fm as fm_stack

log = logging.getLogger(__name__)

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


def _json_rows(output: str) -> list[dict]:
    return compose_stack.parse_ps(output)


# ------------------------------------------------------------------ compose


def record_digests(ctx, docker: str, stack: dict, timeout: float) -> dict[str, str]:
    """service -> repo digest (``repo@sha256:...``) of the image it runs now."""
    base, cwd = compose_stack.base_argv(docker, stack), stack["path"]
    ps = compose_stack.service_rows(
        _json_rows(ctx.run(base + ["ps", "--all", "--format", "json"], timeout=timeout, cwd=cwd).output)
    )
    service_of = {row["name"]: row["service"] for row in ps}
    images = _json_rows(ctx.run(base + ["images", "--format", "json"], timeout=timeout, cwd=cwd).output)
    digests: dict[str, str] = {}
    for row in images:
        service = service_of.get(str(row.get("ContainerName") or ""))
        image_id, repo = str(row.get("ID") or ""), str(row.get("Repository") or "")
        if not service or not image_id:
            continue
        out = ctx.run(
            [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", image_id], timeout=timeout, cwd=cwd
        ).output
        found = []
        for line in out.splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, list):
                found += [str(v) for v in value]
        mine = [d for d in found if d.split("@", 1)[0] == repo] or found
        if not mine:
            # A locally built image was never pulled or pushed: `pull` cannot replace it either.
            ctx.log(f"{service} runs a locally built image ({image_id[:19]}) without a repo digest; it is not pinned")
            continue
        digests[service] = mine[0]
    if not digests:
        ctx.log("WARNING: no service image has a repo digest; a failed update restores the databases only")
    ctx.log("recorded image digests: " + ", ".join(f"{s}={d}" for s, d in sorted(digests.items())))
    return digests


def health_check_compose(ctx, docker: str, stack: dict, timeout: float) -> None:
    base, cwd = compose_stack.base_argv(docker, stack), stack["path"]
    rows = compose_stack.service_rows(
        _json_rows(ctx.run(base + ["ps", "--all", "--format", "json"], timeout=timeout, cwd=cwd).output)
    )
    down = [r["service"] for r in rows if not r["one_shot"] and r["state"] != "running"]
    if down:
        raise StepFailed(f"health check: {', '.join(sorted(down))} not running after the update")


def _compose_files(stack: dict) -> list[str]:
    files = [os.path.join(stack["path"], f) for f in stack.get("files") or ()]
    if files:
        return files
    for name in COMPOSE_FILES:
        path = os.path.join(stack["path"], name)
        if os.path.isfile(path):
            return [path]
    raise StepFailed(f"no compose file found in {stack['path']} to pin the old images against")


def pin_digests(
    ctx, docker: str, name: str, stack: dict, digests: dict[str, str], state_dir: str, timeout: float
) -> str:
    """Write an override pinning every service to its recorded digest and `up -d` with it; returns its path."""
    directory = os.path.join(state_dir, "rollback")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{name}-pinned.json")
    doc = {"services": {s: {"image": d, "pull_policy": "missing"} for s, d in sorted(digests.items())}}
    fd, tmp = tempfile.mkstemp(prefix=".pinned.", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    argv = [docker, "compose"]
    if stack.get("project"):
        argv += ["-p", stack["project"]]
    for name in _compose_files(stack):
        argv += ["-f", name]
    argv += ["-f", path, "--project-directory", stack["path"], "up", "-d"]
    ctx.run(argv, timeout=timeout, cwd=stack["path"], label="docker compose up -d (old images pinned)")
    return path


# ------------------------------------------------------------------ fm


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


def record_commits(ctx, tools, stack: dict, timeout: float) -> dict[str, str]:
    """app -> its commit, from `bench version --format json` in the bench; an app that is not a git
    checkout (commit "") is recorded by its version instead, and the job says so."""
    argv = fm_stack.bench_argv(tools.docker, stack, "version", "--format", "json")
    result = ctx.run(
        argv,
        timeout=timeout,
        cwd=stack["path"],
        label="bench version --format json",
        inspect=fm_stack.refuse_migration(tools, stack),
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
