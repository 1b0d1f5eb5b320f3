"""Grandfather-father-son retention over published backups."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from fmappliance.agent.backups import BackupStore, gfs_keep

STACK = "prod"
SITE = "site1.example.com"
GFS = {"daily": 7, "weekly": 4, "monthly": 12}


def backup_id(day: date, hour: int = 2) -> str:
    return f"{day:%Y-%m-%d}_{hour:02d}-00-00"


def place_backup(store: BackupStore, ident: str, *, verified: bool = True) -> None:
    """A published backup as publish() leaves it (dump + manifest), written directly for speed."""
    directory = Path(store.base_path) / STACK / SITE
    directory.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(f"-- {ident}\n-- Dump completed\n".encode())
    (directory / f"{ident}.sql.gz").write_bytes(data)
    manifest = {
        "id": ident,
        "stack": STACK,
        "site": SITE,
        "created": ident[:10] + "T" + ident[11:].replace("-", ":") + "Z",
        "verified": verified,
        "verification": "test",
        "files": [
            {
                "name": f"{ident}.sql.gz",
                "part": "database",
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ],
    }
    (directory / f"{ident}.json").write_text(json.dumps(manifest))


def present(store: BackupStore) -> set[str]:
    """Ids whose manifest and dump are both still there."""
    directory = Path(store.base_path) / STACK / SITE
    return {p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.sql.gz").exists()}


def all_files(store: BackupStore) -> set[str]:
    return {p.name for p in (Path(store.base_path) / STACK / SITE).iterdir()}


@pytest.fixture
def store(tmp_path) -> BackupStore:
    return BackupStore(str(tmp_path / "backups"), GFS)


# Daily backups at 02:00 UTC through 2026.  2026-12-31 is a Thursday in ISO week 53.
YEAR = [date(2026, 1, 1) + timedelta(days=n) for n in range(365)]
KEPT_AFTER_A_YEAR = {
    # daily: the last 7 days
    *(date(2026, 12, d) for d in range(25, 32)),
    # weekly: newest of ISO weeks 53 (Dec 31), 52 (Sun Dec 27), 51 (Sun Dec 20), 50 (Sun Dec 13)
    date(2026, 12, 20),
    date(2026, 12, 13),
    # monthly: newest of each of the 12 months
    date(2026, 1, 31),
    date(2026, 2, 28),
    date(2026, 3, 31),
    date(2026, 4, 30),
    date(2026, 5, 31),
    date(2026, 6, 30),
    date(2026, 7, 31),
    date(2026, 8, 31),
    date(2026, 9, 30),
    date(2026, 10, 31),
    date(2026, 11, 30),
}


def test_a_year_of_daily_backups_keeps_7_daily_4_weekly_12_monthly(store):
    newest_always_there = True
    for day in YEAR:
        ident = backup_id(day)
        place_backup(store, ident)
        store.apply_retention(STACK, SITE, now=datetime(day.year, day.month, day.day, 3, tzinfo=timezone.utc))
        newest_always_there &= (Path(store.base_path) / STACK / SITE / f"{ident}.json").exists()
    assert newest_always_there
    assert present(store) == {backup_id(day) for day in KEPT_AFTER_A_YEAR}
    assert len(present(store)) == 20
    # Deleting removes dump and manifest together: nothing half-deleted remains.
    assert all_files(store) - {".lock"} == {f"{i}.sql.gz" for i in present(store)} | {
        f"{i}.json" for i in present(store)
    }


def test_retention_applied_once_after_a_year_gives_the_same_set(store):
    for day in YEAR:
        place_backup(store, backup_id(day))
    deleted = store.apply_retention(STACK, SITE, now=datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert present(store) == {backup_id(day) for day in KEPT_AFTER_A_YEAR}
    assert len(deleted) == 365 - 20
    assert store.apply_retention(STACK, SITE, now=datetime(2027, 1, 1, tzinfo=timezone.utc)) == []


def test_the_newest_of_a_day_is_the_one_kept(store):
    for hour in (2, 8, 14, 20):
        place_backup(store, backup_id(date(2026, 5, 1), hour))
    store.apply_retention(STACK, SITE)
    assert present(store) == {backup_id(date(2026, 5, 1), 20)}


def test_zero_retention_still_keeps_the_newest_backup(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0})
    for day in YEAR[:10]:
        place_backup(store, backup_id(day))
    deleted = store.apply_retention(STACK, SITE)
    assert present(store) == {backup_id(YEAR[9])}
    assert sorted(deleted) == [backup_id(day) for day in YEAR[:9]]


def test_unverified_backups_are_neither_counted_nor_deleted(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 2, "weekly": 0, "monthly": 0})
    for day in YEAR[:5]:
        place_backup(store, backup_id(day))
    unverified = backup_id(YEAR[5])
    place_backup(store, unverified, verified=False)
    store.apply_retention(STACK, SITE)
    # The unverified newest takes no daily slot: the two newest verified ones stay, and it stays too.
    assert present(store) == {unverified, backup_id(YEAR[4]), backup_id(YEAR[3])}


def test_only_unverified_backups_means_nothing_is_deleted(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0})
    for day in YEAR[:3]:
        place_backup(store, backup_id(day), verified=False)
    assert store.apply_retention(STACK, SITE) == []
    assert len(present(store)) == 3


def test_files_without_a_manifest_are_never_touched(store):
    for day in YEAR[:30]:
        place_backup(store, backup_id(day))
    directory = Path(store.base_path) / STACK / SITE
    orphan = directory / "2025-12-01_02-00-00.sql.gz"
    orphan.write_bytes(b"not listed anywhere")
    temp = directory / ".2026-01-31_02-00-00.sql.gz.tmp-abcdef"
    temp.write_bytes(b"a publish in progress")
    broken = directory / "2025-11-01_02-00-00.json"
    broken.write_text("{broken")
    store.apply_retention(STACK, SITE)
    assert orphan.exists() and temp.exists() and broken.exists()


def test_backups_stamped_after_now_are_kept(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 1, "weekly": 0, "monthly": 0})
    for day in YEAR[:5]:
        place_backup(store, backup_id(day))
    store.apply_retention(STACK, SITE, now=datetime(2026, 1, 2, 12, tzinfo=timezone.utc))
    # Jan 3-5 lie in the future of `now`: kept, and they take no slot from Jan 2, the newest of the past.
    assert present(store) == {backup_id(day) for day in YEAR[1:5]}


def test_retention_on_a_site_without_backups_does_nothing(store):
    assert store.apply_retention(STACK, SITE) == []


def test_retention_after_real_publishes_removes_published_files(tmp_path):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 2, "weekly": 0, "monthly": 0})
    dump = tmp_path / "dump.sql.gz"
    dump.write_bytes(gzip.compress(b"INSERT INTO t VALUES (1);\n-- Dump completed on 2026-01-13  2:00:03\n"))
    config = tmp_path / "site_config.json"
    config.write_text("{}")
    for day in YEAR[:4]:
        store.publish(
            STACK,
            SITE,
            {"database": str(dump), "site_config": str(config)},
            created=datetime(day.year, day.month, day.day, 2, tzinfo=timezone.utc),
        )
    deleted = store.apply_retention(STACK, SITE)
    assert sorted(deleted) == [backup_id(YEAR[0]), backup_id(YEAR[1])]
    assert [b["id"] for b in store.list_backups(STACK, SITE)] == [backup_id(YEAR[3]), backup_id(YEAR[2])]
    assert not any(name.startswith(("2026-01-01", "2026-01-02")) for name in all_files(store))


def test_gfs_weeks_are_iso_weeks_across_the_new_year():
    # 2026-12-28 (Mon) .. 2027-01-03 (Sun) are one ISO week (2026-W53): one weekly slot.
    ids = [backup_id(date(2026, 12, 27)), backup_id(date(2026, 12, 28)), backup_id(date(2027, 1, 3))]
    assert gfs_keep(ids, {"daily": 0, "weekly": 2, "monthly": 0}) == {ids[2], ids[0]}
    assert gfs_keep(ids, {"daily": 0, "weekly": 0, "monthly": 2}) == {ids[2], ids[1]}
    assert gfs_keep([], GFS) == set()
