"""Frappe Manager benches: FM home, fm argv builders, the bench's compose file for status.

Facts (../shared/docs/frappe-manager.md §1): a bench is `<FM home>/sites/<bench>`; fm reads
its home from FRAPPE_MANAGER_HOME (0.20+); `-n` turns prompts into errors; `shell -c` passes
the command's exit code through; status comes from
`docker compose -f <bench>/docker-compose.yml ps --all --format json` on the main services.
"""

from __future__ import annotations

import os
import shlex

from fmappliance.agent.runner import minimal_env

MAIN_SERVICES = ("frappe", "nginx", "socketio", "schedule", "redis-cache", "redis-queue")
#: The bench dir inside the frappe container, and where it is on the host.
CONTAINER_BENCH = "/workspace/frappe-bench"


def bench_name(stack: dict) -> str:
    return os.path.basename(os.path.normpath(stack["path"]))


def fm_home(stack: dict) -> str:
    """The FM home is the bench path's grandparent: <home>/sites/<bench>."""
    return os.path.dirname(os.path.dirname(os.path.normpath(stack["path"])))


def fm_env(stack: dict) -> dict:
    env = minimal_env()
    env["FRAPPE_MANAGER_HOME"] = fm_home(stack)
    return env


def host_bench_dir(stack: dict) -> str:
    return os.path.join(os.path.normpath(stack["path"]), "workspace", "frappe-bench")


def host_backup_dir(stack: dict, site: str) -> str:
    return os.path.join(host_bench_dir(stack), "sites", site, "private", "backups")


def fm_argv(fm: str, command: str, stack: dict) -> list[str]:
    """`fm -n <command> <bench>` for restart, start, stop."""
    return [fm, "-n", command, bench_name(stack)]


def shell_argv(fm: str, stack: dict, *bench_args: str) -> list[str]:
    """`fm -n shell <bench> -c "bench ..."`: fm takes one command string, so every word is quoted."""
    command = shlex.join(["bench", *bench_args])
    return [fm, "-n", "shell", bench_name(stack), "-c", command]


def ps_argv(docker: str, stack: dict) -> list[str]:
    compose_file = os.path.join(os.path.normpath(stack["path"]), "docker-compose.yml")
    return [docker, "compose", "-f", compose_file, "ps", "--all", "--format", "json"]


def list_sites(stack: dict) -> list[str]:
    """Sites of the bench: `workspace/frappe-bench/sites/*/site_config.json` on the host."""
    from fmappliance.names import is_valid_site_name

    sites_dir = os.path.join(host_bench_dir(stack), "sites")
    try:
        names = os.listdir(sites_dir)
    except OSError:
        return []
    return sorted(n for n in names if is_valid_site_name(n) and os.path.isfile(os.path.join(sites_dir, n, "site_config.json")))
