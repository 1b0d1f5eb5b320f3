"""Updating a frappe_docker project so that a failed update can be undone.

Before anything changes, the repo digest of every service's image is recorded (``compose images`` +
``docker image inspect``); after pull/up/migrate every long-running service must run.  If a step fails,
the project is pinned back to the recorded digests with a generated compose override (JSON is YAML;
the old images were never pruned) *before* the databases are restored from their ``pre-update`` backups.
"""

from __future__ import annotations

import json
import os

from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.stacks.compose import base_argv
from fmappliance.agent.stacks.compose_output import parse_ps, service_rows
from fmappliance.atomic_file import write_json_atomically

COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")


def record_digests(ctx: JobContext, docker: str, stack: dict, timeout: float) -> dict[str, str]:
    """service -> repo digest (``repo@sha256:...``) of the image it runs now."""
    base, cwd = base_argv(docker, stack), stack["path"]
    ps = service_rows(parse_ps(ctx.run(base + ["ps", "--all", "--format", "json"], timeout=timeout, cwd=cwd).output))
    service_of = {row["name"]: row["service"] for row in ps}
    images = parse_ps(ctx.run(base + ["images", "--format", "json"], timeout=timeout, cwd=cwd).output)
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


def health_check(ctx: JobContext, docker: str, stack: dict, timeout: float) -> None:
    """Every long-running service runs after the update."""
    base, cwd = base_argv(docker, stack), stack["path"]
    rows = service_rows(parse_ps(ctx.run(base + ["ps", "--all", "--format", "json"], timeout=timeout, cwd=cwd).output))
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
    ctx: JobContext, docker: str, name: str, stack: dict, digests: dict[str, str], state_dir: str, timeout: float
) -> str:
    """Write an override pinning every service to its recorded digest and `up -d` with it; returns its path."""
    directory = os.path.join(state_dir, "rollback")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{name}-pinned.json")
    doc = {"services": {s: {"image": d, "pull_policy": "missing"} for s, d in sorted(digests.items())}}
    write_json_atomically(path, doc, 0o600, indent=1)
    argv = [docker, "compose"]
    if stack.get("project"):
        argv += ["-p", stack["project"]]
    for name in _compose_files(stack):
        argv += ["-f", name]
    argv += ["-f", path, "--project-directory", stack["path"], "up", "-d"]
    ctx.run(argv, timeout=timeout, cwd=stack["path"], label="docker compose up -d (old images pinned)")
    return path
