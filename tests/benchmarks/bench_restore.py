"""Restoring a 1 GiB backup through the agent vs a plain `bench restore` of the same files.

Goal: the agent's restore_site job (preflight re-hash while staging, maintenance, temporary database user,
bench restore, migrate, check) takes at most 1.3x a plain `bench --site S --force restore` of the same files
already in place, with the safety backup excluded: a backup_site job of the same (small) site state is timed on
its own and subtracted.  Both run against the docker/fm doubles, whose `bench restore` really inflates the dump
into the site's database file and unpacks the tars, on the same files.

The backup: a ~256 MiB dump (mysqldump-like rows, gzip members repeated) and a ~768 MiB public files tar of
incompressible files.  Each side runs twice, alternating; the best of each is compared.

Run from the repository root: .venv/bin/python tests/benchmarks/bench_restore.py
"""

from __future__ import annotations

import gzip
import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "doubles"))

from db_server import site_content  # noqa: E402
from support.world import (  # noqa: E402
    COMPOSE_DB_ROOT_PASSWORD,
    FM_DB_ROOT_PASSWORD,
    FM_SITE,
    build_world,
    start_agent,
)

from fmappliance.agent.backups import BackupStore  # noqa: E402

GOAL = 1.3
DUMP_BYTES = 256 << 20
FILES_BYTES = 768 << 20
FILE_SIZE = 16 << 20
ROUNDS = int(os.environ.get("BENCH_RESTORE_ROUNDS", "2"))
KINDS = tuple(os.environ.get("BENCH_RESTORE_KINDS", "fm,compose").split(","))


def make_dump(path: Path, site: str) -> None:
    """A gzip dump bench would accept: frappe's tables first, ~256 MiB of rows, mysqldump's trailer."""
    rnd = random.Random(3)
    rows = "".join(
        f"INSERT INTO `tabSales Invoice` VALUES ('SINV-{i:07d}','{rnd.getrandbits(96):024x}',{rnd.randrange(10**6)});\n"
        for i in range(120_000)
    ).encode()
    block = gzip.compress(rows, compresslevel=1)
    with open(path, "wb") as out:
        out.write(
            gzip.compress(
                ("-- begin frappe metadata\n-- end frappe metadata\n" + site_content(site, notes=5, tag="big")).encode()
            )
        )
        while out.tell() < DUMP_BYTES:
            out.write(block)
        out.write(gzip.compress(b"-- Dump completed on 2026-11-30  2:00:03\n"))


def make_tar(path: Path, site: str, kind: str, total: int) -> None:
    chunk = random.Random(5).randbytes(FILE_SIZE)
    with tarfile.open(path, "w") as tar:
        for n in range(max(total // FILE_SIZE, 1)):
            data = chunk[n:] + chunk[:n]  # distinct files, no compression benefit
            info = tarfile.TarInfo(f"./{site}/{kind}/files/attachment-{n:03d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def publish_big_backup(world, stack: str, site: str, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    slug = site.replace(".", "_")
    sources = {
        "database": work / f"20261127_020000-{slug}-database.sql.gz",
        "files": work / f"20261127_020000-{slug}-files.tar",
        "private-files": work / f"20261127_020000-{slug}-private-files.tar",
        "site_config": work / f"20261127_020000-{slug}-site_config_backup.json",
    }
    make_dump(sources["database"], site)
    make_tar(sources["files"], site, "public", FILES_BYTES)
    make_tar(sources["private-files"], site, "private", FILE_SIZE)
    sources["site_config"].write_text('{"db_name": "_big"}')
    store = BackupStore(world.config["backups"]["base_path"], world.config["backups"]["retention"])
    # Three days old: the daily retention slot of the benchmark's own backup_site runs never takes it.
    created = datetime.now(timezone.utc) - timedelta(days=3)
    manifest = store.publish(
        stack, site, {k: str(v) for k, v in sources.items()}, created=created, apps=["frappe", "erpnext"]
    )
    shutil.rmtree(work)
    return manifest


class Target:
    def __init__(self, world, kind: str):
        self.world, self.kind = world, kind
        if kind == "fm":
            self.stack, self.site = "erp", FM_SITE
            self.bench = world.bench_path / "workspace" / "frappe-bench"
            self.container = "/workspace/frappe-bench"
            self.server = world.doubles.db_server("services", "global-db")
            self.root_password = FM_DB_ROOT_PASSWORD
        else:
            self.stack, self.site = "prod", "site1.example.com"
            self.bench = world.doubles.volume_bench(world.compose_project)
            self.container = "/home/frappe/frappe-bench"
            self.server = world.doubles.db_server(world.compose_project)
            self.root_password = COMPOSE_DB_ROOT_PASSWORD
        import json

        self.db_name = json.loads((self.bench / "sites" / self.site / "site_config.json").read_text())["db_name"]

    def reset(self) -> None:
        """A small site, as before a restore; unpacked files from an earlier round removed."""
        self.server.set_content(self.db_name, site_content(self.site, notes=20, tag="small"))
        shutil.rmtree(self.bench / "sites" / self.site / "public" / "files", ignore_errors=True)
        shutil.rmtree(self.bench / "sites" / self.site / "private" / "files", ignore_errors=True)

    def place_plain(self, manifest: dict) -> dict:
        """The backup's files in the site's private dir, as an operator would copy them (not timed)."""
        base = Path(self.world.config["backups"]["base_path"]) / self.stack / self.site
        where = self.bench / "sites" / self.site / "private" / "plain"
        where.mkdir(parents=True, exist_ok=True)
        names = {}
        for f in manifest["files"]:
            name = f["name"].replace(manifest["id"], "20261127_020000-x-" + f["part"])
            shutil.copyfile(base / f["name"], where / name)
            names[f["part"]] = f"{self.container}/sites/{self.site}/private/plain/{name}"
        return names

    def plain_restore_argv(self, names: dict) -> tuple[list[str], dict]:
        args = [
            "--site",
            self.site,
            "--force",
            "restore",
            names["database"],
            "--db-root-username",
            "root",
            "--db-root-password",
            self.root_password,
            "--with-public-files",
            names["files"],
            "--with-private-files",
            names["private-files"],
        ]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.world.root)}
        if self.kind == "fm":
            # bench as the agent (and FM itself) runs it on an fm bench: compose exec in the frappe container
            compose_file = str(self.world.bench_path / "docker-compose.yml")
            exec_ = ["exec", "-T", "--user", "frappe", "--workdir", "/workspace/frappe-bench", "frappe"]
            return [self.world.docker, "compose", "-f", compose_file, *exec_, "bench", *args], env
        return [
            self.world.docker,
            "compose",
            "--project-directory",
            str(self.world.compose_path),
            "exec",
            "-T",
            "backend",
            "bench",
            *args,
        ], env


def timed_job(agent, body: dict) -> float:
    start = time.monotonic()
    status, res = agent.request("POST", "/action", body)
    assert status == 202, res
    job = agent.wait_job(res["job"]["id"], timeout=1800)
    took = time.monotonic() - start
    assert job["status"] == "succeeded", job["message"] + "\n" + job["output"][-3000:]
    if os.environ.get("BENCH_RESTORE_VERBOSE"):
        print(f"--- {body['action']} took {took:.1f} s\n" + job["output"][-4000:], flush=True)
    return took


def measure(world, agent, kind: str, work: Path) -> None:
    target = Target(world, kind)
    manifest = publish_big_backup(world, target.stack, target.site, work / kind)
    size = sum(f["size"] for f in manifest["files"])
    names = target.place_plain(manifest)
    agent_times, backup_times, plain_times = [], [], []
    for _ in range(ROUNDS):
        target.reset()
        backup_times.append(timed_job(agent, {"action": "backup_site", "stack": target.stack, "site": target.site}))
        target.reset()
        world.doubles.clear_invocations()
        began = time.time()
        agent_times.append(
            timed_job(
                agent, {"action": "restore_site", "stack": target.stack, "site": target.site, "backup": manifest["id"]}
            )
        )
        if os.environ.get("BENCH_RESTORE_VERBOSE"):
            for call in world.doubles.invocations():
                print(f"{call['time'] - began:7.2f} s  {' '.join(call['argv'])[:150]}")
        assert "-- content tag: big" in target.server.content(target.db_name)
        target.reset()
        argv, env = target.plain_restore_argv(names)
        start = time.monotonic()
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        plain_times.append(time.monotonic() - start)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "-- content tag: big" in target.server.content(target.db_name)
    restore_only = min(agent_times) - min(backup_times)
    ratio = restore_only / min(plain_times)
    verdict = "PASS" if ratio <= GOAL else "MISS"
    print(
        f"restore of a {size / (1 << 30):.2f} GiB backup ({kind} stack): agent restore_site {min(agent_times):.1f} s "
        f"- safety backup {min(backup_times):.1f} s = {restore_only:.1f} s vs plain bench restore "
        f"{min(plain_times):.1f} s: {ratio:.2f}x (goal <= {GOAL}x) {verdict}",
        flush=True,
    )


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="fmappliance-bench-restore-"))
    agent = None
    try:
        (root / "world").mkdir()
        world = build_world(root / "world")
        agent = start_agent(world)
        for kind in KINDS:
            measure(world, agent, kind, root / "work")
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
