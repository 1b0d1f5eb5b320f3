"""Helpers for the restore tests: the real agent over a socket, and the doubles' databases per stack type."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench_site import ENCRYPT_MARK  # noqa: E402,F401  (re-exported)
from db_server import site_content  # noqa: E402
from support.world import COMPOSE_DB_ROOT_PASSWORD, FM_DB_ROOT_PASSWORD, FM_SITE  # puts the doubles on sys.path

TARGETS = {"compose": ("prod", "site1.example.com"), "fm": ("erp", FM_SITE)}
ROOT_PASSWORDS = (COMPOSE_DB_ROOT_PASSWORD, FM_DB_ROOT_PASSWORD)


def run_job(agent, body: dict, expect: str = "succeeded", timeout: float = 90) -> dict:
    status, res = agent.request("POST", "/action", body)
    assert status == 202, res
    job = agent.wait_job(res["job"]["id"], timeout=timeout)
    assert job["status"] == expect, f"{job['message']}\n{job['output']}"
    return job


def backup(agent, stack: str, site: str, **extra) -> dict:
    return run_job(agent, {"action": "backup_site", "stack": stack, "site": site, **extra})["result"]["backup"]


def restore(agent, stack: str, site: str, backup_id: str, expect: str = "succeeded", **extra) -> dict:
    return run_job(
        agent, {"action": "restore_site", "stack": stack, "site": site, "backup": backup_id, **extra}, expect
    )


def bench_root(world, stack: str) -> Path:
    if stack == "erp":
        return world.bench_path / "workspace" / "frappe-bench"
    return world.doubles.volume_bench(world.compose_project)


def server(world, stack: str):
    return (
        world.doubles.db_server("services", "global-db")
        if stack == "erp"
        else world.doubles.db_server(world.compose_project)
    )


def db_service(world, stack: str) -> tuple[str, str]:
    return ("services", "global-db") if stack == "erp" else (world.compose_project, "db")


def site_config_path(world, stack: str, site: str) -> Path:
    return bench_root(world, stack) / "sites" / site / "site_config.json"


def site_config(world, stack: str, site: str) -> dict:
    return json.loads(site_config_path(world, stack, site).read_text())


def update_site_config(world, stack: str, site: str, **values) -> None:
    config = site_config(world, stack, site)
    config.update(values)
    site_config_path(world, stack, site).write_text(json.dumps(config))


def set_content(world, stack: str, site: str, tag: str, apps=("frappe", "erpnext"), extra: str = "") -> str:
    """Give the site's database a content that names ``tag``; returns it."""
    text = site_content(site, apps=apps, notes=20, tag=tag) + extra
    server(world, stack).set_content(site_config(world, stack, site)["db_name"], text)
    return text


def content(world, stack: str, site: str) -> str | None:
    return server(world, stack).content(site_config(world, stack, site)["db_name"])


def published_dir(world, stack: str, site: str) -> Path:
    return Path(world.config["backups"]["base_path"]) / stack / site


def published_dump(world, stack: str, site: str, backup_id: str) -> str:
    return gzip.decompress((published_dir(world, stack, site) / f"{backup_id}.sql.gz").read_bytes()).decode()


def listing(agent, stack: str, site: str) -> list[dict]:
    status, res = agent.request("GET", f"/backups/{stack}/{site}")
    assert status == 200, res
    return res["backups"]


def bench_calls(world, words: tuple[str, ...]) -> list[list[str]]:
    """The docker calls that ran bench with every word in their argv (a `bash -c` string counts word by
    word): what reached the containers, whether the agent or the real fm sent it."""
    found = []
    for call in world.doubles.invocations("docker"):
        flat = " ".join(call["argv"]).split()
        if all(w in flat for w in words):
            found.append(call["argv"])
    return found
