"""Restores against a bench container that fights back (issue 21): planted links, and secrets kept out of argv."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from restore_support import TARGETS, backup, bench_root, restore

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
