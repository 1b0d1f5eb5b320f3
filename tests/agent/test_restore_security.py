"""Restores against a bench container that fights back (issue 21): planted links, and secrets kept out of argv."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from double_state import container_ip
from restore_support import (
    ENCRYPT_MARK,
    ROOT_PASSWORDS,
    TARGETS,
    backup,
    bench_root,
    restore,
    run_job,
    server,
    set_content,
    site_config,
    update_site_config,
)

from fmappliance.agent.backups import BackupError
from fmappliance.agent.backups.benchstage import StageDir

PRIVATE = ["workspace", "frappe-bench", "sites", "s.localhost", "private"]


@pytest.fixture
def agent(world, agent_process):
    return agent_process()


def bench_with_outside(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A bench dir whose site's private dir exists, and a directory outside the bench with a file in it."""
    bench = tmp_path / "bench"
    private = bench.joinpath(*PRIVATE)
    private.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("host file")
    return bench, private, outside


def snapshot(directory: Path) -> dict:
    """Every entry below ``directory`` with what a write or chown would change."""
    return {
        str(p.relative_to(directory)): (
            p.stat().st_ctime_ns,
            p.stat().st_mtime_ns,
            p.read_bytes() if p.is_file() else b"",
        )
        for p in sorted(directory.rglob("*"))
    } | {".": (directory.stat().st_ctime_ns, directory.stat().st_mtime_ns, b"")}


def test_a_stage_below_a_planted_link_is_refused_and_nothing_lands_outside(tmp_path):
    bench, private, outside = bench_with_outside(tmp_path)
    private.rmdir()
    private.symlink_to(outside)
    before = snapshot(outside)
    with pytest.raises(BackupError) as refused:
        StageDir(str(bench), PRIVATE, "fmappliance-restore-j1")
    assert "refusing to follow it" in str(refused.value)
    assert snapshot(outside) == before


def test_a_planted_link_in_the_stages_place_is_removed_not_followed(tmp_path):
    bench, private, outside = bench_with_outside(tmp_path)
    (private / "fmappliance-restore-j1").symlink_to(outside)
    before = snapshot(outside)
    stage = StageDir(str(bench), PRIVATE, "fmappliance-restore-j1")
    fd = stage.create("part.sql.gz")
    os.write(fd, b"dump")
    os.close(fd)
    stage.hand_over(os.getuid(), os.getgid())
    real = private / "fmappliance-restore-j1"
    assert real.is_dir() and not real.is_symlink() and (real / "part.sql.gz").read_bytes() == b"dump"
    assert oct(real.stat().st_mode & 0o777) == oct(0o700)
    stage.remove()
    assert not os.path.lexists(real)
    assert snapshot(outside) == before


def test_a_stage_swapped_for_a_link_mid_restore_writes_chowns_and_removes_nothing_outside(tmp_path):
    bench, private, outside = bench_with_outside(tmp_path)
    stage = StageDir(str(bench), PRIVATE, "fmappliance-restore-j1")
    fd = stage.create("first.tar")
    os.close(fd)
    # the container renames the stage away and puts a link to a host directory in its place
    (private / "fmappliance-restore-j1").rename(private / "moved")
    (private / "fmappliance-restore-j1").symlink_to(outside)
    (outside / "first.tar").write_text("host file with the staged name")
    before = snapshot(outside)
    fd = stage.create("second.tar")
    os.write(fd, b"part")
    os.close(fd)
    stage.hand_over(os.getuid(), os.getgid())
    stage.remove()
    assert snapshot(outside) == before
    assert (private / "fmappliance-restore-j1").is_symlink()  # the planted link itself is left alone
    assert not any((private / "moved").iterdir())  # ours was emptied where it really is


def test_an_fm_restore_through_a_planted_private_link_fails_before_anything_changes(world, agent):
    stack, site = TARGETS["fm"]
    made = backup(agent, stack, site)
    private = bench_root(world, stack) / "sites" / site / "private"
    outside = world.root / "host-dir"
    private.rename(outside)
    private.symlink_to(outside)
    before = sorted(p.name for p in outside.iterdir())
    job = restore(agent, stack, site, made["id"], expect="failed")
    assert "Preflight failed, nothing was changed" in job["message"] and "refusing to follow it" in job["message"]
    assert sorted(p.name for p in outside.iterdir()) == before


BACKUP_KEY = "bk-Secret-7f3a!"
FIELD_KEY = "ek-PasswordFields-91c2"


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_restores_and_test_restores_put_no_secret_in_any_argv(world, agent, kind):
    """Database passwords, keys and the Administrator password reach bench and mariadb by file, environment or
    stdin: none is in an argv docker or fm was started with (readable in /proc/*/cmdline)."""
    stack, site = TARGETS[kind]
    update_site_config(world, stack, site, backup_encryption_key=BACKUP_KEY, encryption_key=FIELD_KEY)
    set_content(world, stack, site, "secret-sunday", extra=ENCRYPT_MARK + "\n")
    made = backup(agent, stack, site)
    assert made["encrypted"] is True
    world.doubles.clear_invocations()

    restore(agent, stack, site, made["id"])
    proof = run_job(agent, {"action": "test_restore", "stack": stack, "site": site, "backup": made["id"]})
    jobs = [proof]
    if kind == "compose":  # a restore onto a new site runs bench new-site (an Administrator password)
        jobs.append(
            restore(agent, stack, "new.example.com", made["id"], from_stack=stack, from_site=site, create_site=True)
        )

    given = world.doubles.secrets_given()
    kinds = {g["kind"] for g in given}
    assert {"MYSQL_PWD", "database password", "bench root password", "admin password"} <= kinds, kinds
    assert "backup encryption key" in kinds
    secrets = {g["value"] for g in given} | set(ROOT_PASSWORDS) | {BACKUP_KEY, FIELD_KEY}
    argvs = world.doubles.argvs("docker") + world.doubles.argvs("fm")
    assert argvs
    for argv in argvs:
        line = " ".join(argv)
        for secret in secrets:
            assert secret not in line, f"a secret ({secret[:3]}…) is in the argv {argv[:8]}…"
        for flag in ("--db-root-password", "--admin-password", "--encryption-key", "encryption_key"):
            assert flag not in line
    for job in jobs:
        for secret in secrets:
            assert secret not in job["output"] and secret not in job["message"]
    # The temporary accounts were for the bench container's own address (as docker records it), never '%'.
    hosts = set(re.findall(r"temporary database user fma_restore_[0-9a-f]+ for (\S+) ", proof["output"]))
    container = "frappe_docker-backend-1" if kind == "compose" else f"fm__{site.replace('.', '_')}__frappe"
    assert hosts == {container_ip(container)}
    # The credentials were in the config only for their step; the temporary accounts are gone.
    config = site_config(world, stack, site)
    assert not {"root_login", "root_password", "admin_password"} & set(config)
    assert config["backup_encryption_key"] == BACKUP_KEY and config["encryption_key"] == FIELD_KEY
    common = json.loads((bench_root(world, stack) / "sites" / "common_site_config.json").read_text())
    assert not {"root_login", "root_password", "admin_password"} & set(common)
    assert server(world, stack).users() == {}
    if kind == "compose":
        assert site_config(world, stack, "new.example.com")["encryption_key"] == FIELD_KEY


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_site_config_naming_another_database_is_refused_before_anything_changes(world, agent, kind):
    """db_name comes from a file the container can write: MariaDB's own schemas are refused, and on an fm bench
    the name must be the one bench_config.toml (outside the container) records."""
    stack, site = TARGETS[kind]
    made = backup(agent, stack, site)
    real = site_config(world, stack, site)["db_name"]
    update_site_config(world, stack, site, db_name="mysql")
    job = restore(agent, stack, site, made["id"], expect="failed")
    assert "Preflight failed, nothing was changed" in job["message"] and "'mysql'" in job["message"]
    if kind == "fm":
        bench_config = world.bench_path / "bench_config.toml"  # as FM wrote it; db_name is the site's real one
        assert f'db_name = "{real}"' in bench_config.read_text()
        update_site_config(world, stack, site, db_name="_another_bench_db")
        job = restore(agent, stack, site, made["id"], expect="failed")
        assert "bench_config.toml" in job["message"] and "Preflight failed" in job["message"]
        update_site_config(world, stack, site, db_name=real)
        restore(agent, stack, site, made["id"])
    assert server(world, stack).users() == {}


def test_an_fm_site_config_swapped_for_a_link_is_not_followed(world, agent):
    stack, site = TARGETS["fm"]
    made = backup(agent, stack, site)
    config = bench_root(world, stack) / "sites" / site / "site_config.json"
    outside = world.root / "host-config.json"
    outside.write_text(config.read_text())
    config.unlink()
    config.symlink_to(outside)
    before = outside.read_text()
    job = restore(agent, stack, site, made["id"], expect="failed")
    assert "symlink" in job["message"] and "nothing was changed" in job["message"]
    assert outside.read_text() == before
