"""Retention over published backups: grandfather-father-son slots, keep_last, and the safety hold of
labelled backups (every placed manifest carries a label, ``scheduled`` unless a test says otherwise)."""

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


def place_backup(store: BackupStore, ident: str, *, verified: bool = True, label: str | None = "scheduled") -> None:
    """A published backup as publish() leaves it (dump + manifest), written directly for speed.

    ``label=None`` writes a manifest without a label, as published before labels existed.
    """
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
    if label is not None:
        manifest["label"] = label
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


# ---- keep_last and the safety hold of labelled backups ------------------------------------------

DAY = date(2026, 6, 10)
NEXT_MORNING = datetime(2026, 6, 11, 3, tzinfo=timezone.utc)


def test_backup_now_before_a_risky_change_survives_that_nights_scheduled_run(tmp_path):
    """Strict GFS kept only the newest of the day: the night's scheduled run deleted the afternoon's manual backup."""
    store = BackupStore(str(tmp_path / "backups"), {**GFS, "keep_last": 0})
    for day in YEAR[150:160]:
        place_backup(store, backup_id(day, 23))
    place_backup(store, backup_id(DAY, 14), label="manual")
    place_backup(store, backup_id(DAY, 23))
    store.apply_retention(STACK, SITE, now=NEXT_MORNING)
    assert backup_id(DAY, 14) in present(store)
    assert backup_id(DAY, 23) in present(store)


@pytest.mark.parametrize("label", ["manual", "pre-update", "pre-restore", "imported"])
def test_safety_labels_are_kept_for_keep_safety_days_whatever_the_tiers_say(tmp_path, label):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 0}, keep_safety_days=14
    )
    held = backup_id(DAY - timedelta(days=13), 9)
    expired = backup_id(DAY - timedelta(days=15), 9)
    place_backup(store, held, label=label)
    place_backup(store, expired, label=label)
    place_backup(store, backup_id(DAY, 2))
    deleted = store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 12, tzinfo=timezone.utc))
    assert deleted == [expired]
    assert present(store) == {held, backup_id(DAY, 2)}


def test_scheduled_backups_get_no_safety_hold(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 0}, keep_safety_days=14
    )
    for hour in (2, 8, 14):
        place_backup(store, backup_id(DAY, hour), label="scheduled")
    store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 20, tzinfo=timezone.utc))
    assert present(store) == {backup_id(DAY, 14)}


def test_the_safety_hold_ends_exactly_keep_safety_days_after_the_backup(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 0}, keep_safety_days=3
    )
    manual = backup_id(DAY, 9)
    place_backup(store, manual, label="manual")
    place_backup(store, backup_id(DAY + timedelta(days=2), 2))
    store.apply_retention(STACK, SITE, now=datetime(2026, 6, 13, 8, 59, 59, tzinfo=timezone.utc))
    assert manual in present(store)
    place_backup(store, backup_id(DAY + timedelta(days=3), 2))
    store.apply_retention(STACK, SITE, now=datetime(2026, 6, 13, 9, 0, 0, tzinfo=timezone.utc))
    assert manual not in present(store)


def test_a_backup_from_before_labels_existed_is_held_like_a_manual_one(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 0}, keep_safety_days=14
    )
    unlabelled_recent = backup_id(DAY - timedelta(days=2), 9)
    unlabelled_old = backup_id(DAY - timedelta(days=20), 9)
    place_backup(store, unlabelled_recent, label=None)
    place_backup(store, unlabelled_old, label=None)
    place_backup(store, backup_id(DAY, 2))
    assert store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 12, tzinfo=timezone.utc)) == [unlabelled_old]


def test_keep_last_keeps_the_newest_n_whatever_the_tiers_say(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 1, "weekly": 0, "monthly": 0, "keep_last": 3}, keep_safety_days=0
    )
    for hour in (1, 5, 9, 13, 17):
        place_backup(store, backup_id(DAY, hour))
    store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 20, tzinfo=timezone.utc))
    assert present(store) == {backup_id(DAY, 9), backup_id(DAY, 13), backup_id(DAY, 17)}


def test_keep_last_does_not_count_backups_stamped_in_the_future_or_unverified(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 2}, keep_safety_days=0
    )
    for hour in (1, 5, 9):
        place_backup(store, backup_id(DAY, hour))
    place_backup(store, backup_id(DAY, 10), verified=False)
    place_backup(store, backup_id(DAY, 23))  # after `now`: the clock went backwards
    store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 12, tzinfo=timezone.utc))
    assert present(store) == {backup_id(DAY, 5), backup_id(DAY, 9), backup_id(DAY, 10), backup_id(DAY, 23)}


def test_the_agent_uses_the_configured_keep_last_and_safety_days(tmp_path):
    from support.config_factory import write_config

    from fmappliance.agent.app import build_services
    from fmappliance.config import load_config

    defaults = build_services(load_config(write_config(tmp_path)))
    try:
        assert defaults.store.retention["keep_last"] == 3 and defaults.store.keep_safety_days == 14
    finally:
        defaults.close()
    (tmp_path / "other").mkdir()
    chosen = build_services(
        load_config(write_config(tmp_path / "other", backups={"retention": {"keep_last": 5}, "keep_safety_days": 30}))
    )
    try:
        assert chosen.store.retention == {"daily": 7, "weekly": 4, "monthly": 12, "keep_last": 5}
        assert chosen.store.keep_safety_days == 30
    finally:
        chosen.close()


def test_the_label_retention_goes_by_is_the_one_the_listing_shows(tmp_path):
    store = BackupStore(
        str(tmp_path / "backups"), {"daily": 0, "weekly": 0, "monthly": 0, "keep_last": 0}, keep_safety_days=14
    )
    unlabelled, odd, scheduled = (backup_id(DAY, h) for h in (5, 6, 7))
    place_backup(store, unlabelled, label=None)
    place_backup(store, odd, label="something-newer")
    place_backup(store, scheduled, label="scheduled")
    place_backup(store, backup_id(DAY, 8))
    assert store.apply_retention(STACK, SITE, now=datetime(2026, 6, 10, 12, tzinfo=timezone.utc)) == [scheduled]
    listed = {b["id"]: b["label"] for b in store.list_backups(STACK, SITE)}
    assert listed[unlabelled] == "manual" and listed[odd] == "manual"
