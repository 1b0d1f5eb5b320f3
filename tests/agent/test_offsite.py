"""Offsite copies with the real restic against a local-path repository."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.polling import wait_for
from test_backups import bench_backup

from fmappliance.agent.backups import BackupStore
from fmappliance.agent.backups.errors import BackupNotFound
from fmappliance.agent.offsite import Offsite, OffsiteFailed

STACK = "prod"
SITE = "site1.example.com"
PASSWORD = "offsite-pass-Zq81xLm0"
RESTIC = shutil.which("restic")
pytestmark = pytest.mark.skipif(RESTIC is None, reason="restic is not installed (tests/install_system_deps.sh)")


class Ctx:
    """The job context an offsite body gets: it keeps the output lines."""

    def __init__(self):
        self.lines: list[str] = []
        self.message = None

    def log(self, text):
        self.lines.append(text)

    def deadline_left(self):
        return 600.0


def private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def world(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 7, "weekly": 4, "monthly": 12})
    state = tmp_path / "state"
    state.mkdir()
    cfg = {
        "offsite": {
            "repository": str(tmp_path / "repo"),
            "password_file": private_file(tmp_path / "pw", PASSWORD + "\n"),
            "env_file": None,
            "options": [],
            "retention": {"daily": 2, "weekly": 0, "monthly": 0},
            "check_subset": "100%",
            "limit_upload_kbps": 0,
            "restic_binary": "restic",
        }
    }
    return store, Offsite(cfg, store, str(state)), cfg, tmp_path


def publish(store, tmp_path, when: datetime, site=SITE, rows=200):
    sources = bench_backup(tmp_path / "bench" / when.strftime("%Y%m%d%H%M%S") / site, dump_rows=rows)
    return store.publish(STACK, site, sources, created=when)


def test_first_copy_initialises_the_repository_and_lists_the_backup(world):
    store, offsite, _cfg, tmp = world
    manifest = publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    ctx = Ctx()
    result = offsite.copy_site(ctx, STACK, SITE)
    assert result["copied"] == [manifest["id"]]
    assert result["bytes_sent"] > 0
    assert any("restic init" in line for line in ctx.lines)
    assert any("bytes sent" in line for line in ctx.lines)
    snaps = offsite.snapshots(STACK, SITE, refresh=True)
    assert [s["backup"] for s in snaps] == [manifest["id"]]
    assert snaps[0]["size"] == sum(f["size"] for f in manifest["files"])
    assert {f["sha256"] for f in snaps[0]["files"]} == {f["sha256"] for f in manifest["files"]}
    # a second copy has nothing to do
    ctx2 = Ctx()
    assert offsite.copy_site(ctx2, STACK, SITE)["copied"] == []
    assert not any("restic init" in line for line in ctx2.lines)
    assert offsite.last_and_lag(STACK, SITE) == ({"time": snaps[0]["created"], "backup": manifest["id"]}, 0)


def test_restore_from_offsite_is_byte_identical(world):
    store, offsite, _cfg, tmp = world
    manifest = publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    offsite.copy_site(Ctx(), STACK, SITE)
    target = tmp / "restored"
    folder, restored_manifest = offsite.restore_into(STACK, SITE, manifest["id"], str(target))
    assert restored_manifest["id"] == manifest["id"]
    for f in manifest["files"]:
        original = Path(store.base_path) / STACK / SITE / f["name"]
        assert (Path(folder) / f["name"]).read_bytes() == original.read_bytes()
        assert hashlib.sha256((Path(folder) / f["name"]).read_bytes()).hexdigest() == f["sha256"]


def test_retention_prunes_per_site_and_rebuild_lists_from_an_empty_state_dir(world):
    store, offsite, cfg, tmp = world
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [publish(store, tmp, now - timedelta(days=d, minutes=1))["id"] for d in (3, 2, 1, 0)]
    other = publish(store, tmp, now - timedelta(days=3, minutes=1), site="site2.example.com")["id"]
    offsite.copy_site(Ctx(), STACK, "site2.example.com")
    offsite.copy_site(Ctx(), STACK, SITE)
    kept = [s["backup"] for s in offsite.snapshots(STACK, SITE, refresh=True)]
    # daily: 2 -> the two newest days stay; the older ones are pruned (or never copied)
    assert kept == [ids[3], ids[2]]
    # the other site's lone old snapshot is untouched by this site's retention
    assert [s["backup"] for s in offsite.snapshots(STACK, "site2.example.com", refresh=True)] == [other]
    # rebuild: a fresh agent with an empty state dir and no local backups sees the same listing
    empty_store = BackupStore(str(tmp / "fresh-backups"), {"daily": 7})
    fresh = Offsite(cfg, empty_store, str(tmp / "fresh-state"))
    os.makedirs(tmp / "fresh-state")
    listing = fresh.snapshots(STACK, SITE)
    assert [s["backup"] for s in listing] == kept
    assert all(s["files"] and s["size"] > 0 for s in listing)


def test_check_passes_then_fails_after_a_pack_is_damaged(world):
    store, offsite, cfg, tmp = world
    publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5), rows=2000)
    offsite.copy_site(Ctx(), STACK, SITE)
    ctx = Ctx()
    offsite.check(ctx)
    assert "passed" in ctx.message
    packs = sorted((tmp / "repo" / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    pack = packs[-1]
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.chmod(0o600)
    pack.write_bytes(bytes(data))
    with pytest.raises(OffsiteFailed) as failed:
        offsite.check(Ctx())
    assert "check failed" in str(failed.value)


def test_wrong_password_and_held_lock_fail_with_their_own_sentence_then_catch_up(world):
    store, offsite, cfg, tmp = world
    first = publish(store, tmp, datetime.now(timezone.utc) - timedelta(hours=2))
    offsite.copy_site(Ctx(), STACK, SITE)
    second = publish(store, tmp, datetime.now(timezone.utc) - timedelta(hours=1))
    pw = Path(cfg["offsite"]["password_file"])
    pw.write_text("not-the-password\n")
    with pytest.raises(OffsiteFailed) as wrong:
        offsite.copy_site(Ctx(), STACK, SITE)
    assert "refused the password" in str(wrong.value)
    pw.write_text(PASSWORD + "\n")
    # a lock held by a live restic process: a `backup --stdin` waiting for its input; retention's prune needs
    # the repository to itself
    lock_env = {**os.environ, "RESTIC_REPOSITORY": cfg["offsite"]["repository"], "RESTIC_PASSWORD_FILE": str(pw)}
    holder = subprocess.Popen(
        [RESTIC, "backup", "--stdin"],
        env=lock_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: any((tmp / "repo" / "locks").iterdir()), timeout=30)
        with pytest.raises(OffsiteFailed) as locked:
            offsite.copy_site(Ctx(), STACK, SITE)
        assert "locked by another restic process" in str(locked.value)
    finally:
        holder.kill()
        holder.wait()
    subprocess.run([RESTIC, "unlock"], env=lock_env, capture_output=True, check=True)
    # the local backups are intact, and the next copy catches up
    assert [b["id"] for b in store.list_backups(STACK, SITE)] == [second["id"], first["id"]]
    assert second["id"] in [s["backup"] for s in offsite.snapshots(STACK, SITE, refresh=True)]
    assert offsite.copy_site(Ctx(), STACK, SITE)["copied"] == []


def test_an_unreachable_repository_fails_with_its_sentence(world):
    store, offsite, cfg, tmp = world
    publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    cfg["offsite"]["repository"] = "rest:http://127.0.0.1:9/repo"
    with pytest.raises(OffsiteFailed) as down:
        offsite.copy_site(Ctx(), STACK, SITE)
    assert "could not be reached" in str(down.value)


def test_offsite_lag_counts_local_backups_newer_than_the_newest_copy(world):
    store, offsite, _cfg, tmp = world
    publish(store, tmp, datetime.now(timezone.utc) - timedelta(hours=2))
    offsite.copy_site(Ctx(), STACK, SITE)
    newer = publish(store, tmp, datetime.now(timezone.utc) - timedelta(hours=1))
    last, lag = offsite.last_and_lag(STACK, SITE)
    assert lag == 1 and last["backup"] != newer["id"]
    offsite.copy_site(Ctx(), STACK, SITE)
    assert offsite.last_and_lag(STACK, SITE) == (
        {"time": offsite.snapshots(STACK, SITE)[0]["created"], "backup": newer["id"]},
        0,
    )


def test_listing_before_the_first_copy_is_empty_and_creates_nothing(world):
    _store, offsite, _cfg, tmp = world
    assert offsite.snapshots(STACK, SITE, refresh=True) == []
    assert not (tmp / "repo").exists()


def test_a_backup_stays_downloadable_during_a_copy_and_after_a_crash_mid_copy(world):
    """The stage links the verified files (no 1 GiB copy); the store serves a file with a second link only when
    that link is the agent's own stage entry (issue 21, item 13)."""
    store, offsite, cfg, tmp = world
    manifest = publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    names = [f["name"] for f in manifest["files"]] + [manifest["id"] + ".json"]
    seen_during_copy = []
    real_restic = offsite.restic

    def restic_watching(*args, **kwargs):
        if args and args[0] == "backup":
            stage = tmp / "state" / "offsite" / STACK / SITE
            assert sorted(p.name for p in stage.iterdir()) == sorted(names)
            for name in names:
                handle, st = store.open_published_file(STACK, SITE, name)
                handle.close()
                staged = (stage / name).stat()
                seen_during_copy.append((name, st.st_nlink, (staged.st_dev, staged.st_ino) == (st.st_dev, st.st_ino)))
        return real_restic(*args, **kwargs)

    offsite.restic = restic_watching
    offsite.copy_site(Ctx(), STACK, SITE)
    assert sorted(n for n, _, _ in seen_during_copy) == sorted(names)
    assert all(links == 2 and same for _, links, same in seen_during_copy)
    for name in names:  # the stage is gone: one link again
        assert (Path(store.base_path) / STACK / SITE / name).stat().st_nlink == 1
    # an agent that died mid-copy (with an older agent's hard links in the stage): the next start cleans it
    stage = tmp / "state" / "offsite" / STACK / SITE
    stage.mkdir(parents=True)
    os.link(Path(store.base_path) / STACK / SITE / names[0], stage / names[0])
    (tmp / "state" / "offsite-restore" / "job1").mkdir(parents=True)
    Offsite(cfg, store, str(tmp / "state"))
    assert not (tmp / "state" / "offsite").exists() and not (tmp / "state" / "offsite-restore").exists()
    handle, st = store.open_published_file(STACK, SITE, names[0])
    handle.close()
    assert st.st_nlink == 1


def test_an_offsite_restore_without_room_says_so_before_restic_runs(world, monkeypatch):
    store, offsite, _cfg, tmp = world
    manifest = publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    offsite.copy_site(Ctx(), STACK, SITE)
    target = tmp / "restored"
    real_usage = shutil.disk_usage
    ran = []
    real_restic = offsite.restic
    offsite.restic = lambda *a, **k: (ran.append(a[0]), real_restic(*a, **k))[1]

    def tiny(path):
        usage = real_usage(path)
        return usage._replace(free=1000) if str(path).startswith(str(tmp)) else usage

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    with pytest.raises(OffsiteFailed) as full:
        offsite.restore_into(STACK, SITE, manifest["id"], str(target))
    assert "Not enough free space" in str(full.value) and "MiB needed" in str(full.value)
    assert "restore" not in ran
    assert not target.exists()


def test_the_listing_a_copy_leaves_matches_a_fresh_listing_and_a_deleted_repository_is_made_again(world):
    # After a copy the agent builds the site's listing from forget's kept snapshots and the manifests it just
    # uploaded (no second `restic snapshots`, no `restic dump`): it must equal what restic lists afresh.
    store, offsite, cfg, tmp = world
    now = datetime.now(timezone.utc).replace(microsecond=0)
    ids = [publish(store, tmp, now - timedelta(days=d, minutes=1))["id"] for d in (3, 2, 1)]
    offsite.copy_site(Ctx(), STACK, SITE)
    publish(store, tmp, now - timedelta(minutes=1), site="site2.example.com")
    offsite.copy_site(Ctx(), STACK, "site2.example.com")
    left = {site: offsite.snapshots(STACK, site) for site in (SITE, "site2.example.com")}
    assert [s["backup"] for s in left[SITE]] == [ids[2], ids[1]]  # daily: 2 pruned the oldest
    fresh = Offsite(cfg, BackupStore(str(tmp / "fresh-backups"), {"daily": 7}), str(tmp / "fresh-state"))
    assert {site: fresh.snapshots(STACK, site) for site in left} == left
    # the repository vanished (deleted by hand): the next copy initialises it again instead of failing
    shutil.rmtree(tmp / "repo")
    newest = publish(store, tmp, now)["id"]
    ctx = Ctx()
    assert newest in offsite.copy_site(ctx, STACK, SITE)["copied"]
    assert any("restic init" in line for line in ctx.lines)


def test_a_second_link_is_served_only_when_it_is_the_agents_own_stage_entry(world):
    store, _offsite, _cfg, tmp = world
    manifest = publish(store, tmp, datetime.now(timezone.utc) - timedelta(minutes=5))
    name = manifest["files"][0]["name"]
    published = Path(store.base_path) / STACK / SITE / name
    stage = tmp / "state" / "offsite" / STACK / SITE
    stage.mkdir(parents=True)
    # a second name anywhere else (planted next to the backups, or in the stage of another site): refused
    for elsewhere in (tmp / "planted", tmp / "state" / "offsite" / STACK / "other.example.com" / name):
        elsewhere.parent.mkdir(parents=True, exist_ok=True)
        os.link(published, elsewhere)
        with pytest.raises(BackupNotFound):
            store.open_published_file(STACK, SITE, name)
        elsewhere.unlink()
    # the stage entry of this very file: served
    os.link(published, stage / name)
    handle, st = store.open_published_file(STACK, SITE, name)
    handle.close()
    assert st.st_nlink == 2
    # the stage entry plus one more name: refused again
    os.link(published, tmp / "planted")
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, name)
    (tmp / "planted").unlink()
    # a file of the same name in the stage that is not the published inode does not vouch for it
    (stage / name).unlink()
    (stage / name).write_bytes(b"x")
    os.link(published, tmp / "planted")
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, name)


def test_a_name_swapped_after_the_store_checked_it_is_not_linked_into_the_stage(tmp_path):
    # the stage gets the verified bytes (those of the open file), never whatever the name points at by now
    from fmappliance.agent.offsite import _stage_file

    verified, swapped = tmp_path / "verified", tmp_path / "swapped"
    verified.write_bytes(b"verified bytes")
    swapped.write_bytes(b"planted")
    with open(verified, "rb") as fh:
        st = os.fstat(fh.fileno())
        _stage_file(fh.fileno(), st, str(swapped), str(tmp_path / "staged"))
    assert (tmp_path / "staged").read_bytes() == b"verified bytes"
    assert (tmp_path / "staged").stat().st_ino != swapped.stat().st_ino and swapped.stat().st_nlink == 1
