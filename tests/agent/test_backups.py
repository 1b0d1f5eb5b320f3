"""BackupStore: verified publication, crash clean-up, listing and the download traversal matrix."""

from __future__ import annotations

import errno
import fcntl
import functools
import gzip
import hashlib
import io
import json
import os
import random
import signal
import stat
import subprocess
import sys
import tarfile
import textwrap
import zlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

from fmappliance.agent.backups import BackupError, BackupNotFound, BackupStore, BadBackupRequest
from fmappliance.agent.backups.layout import LABELS
from fmappliance.agent.backups.verify import INFLATE_MAX_OUT, DumpCheck, GzipStream

STACK = "prod"
SITE = "site1.example.com"
WHEN = datetime(2026, 1, 13, 2, 0, 3, tzinfo=timezone.utc)
RETENTION = {"daily": 7, "weekly": 4, "monthly": 12}


# ---- what bench --site S backup --with-files leaves behind (docs/doubles.md, "Output shapes") ----


def dump_text(rows: int = 200, *, trailer: bool = True, seed: int = 1) -> bytes:
    rnd = random.Random(seed)
    lines = [
        "-- begin frappe metadata",
        '-- {"site": "site1.example.com", "apps": ["frappe", "erpnext"]}',
        "-- end frappe metadata",
        "-- MariaDB dump 10.19  Distrib 10.6.16-MariaDB, for debian-linux-gnu (x86_64)",
        "/*!40101 SET NAMES utf8mb4 */;",
        "DROP TABLE IF EXISTS `tabSales Invoice`;",
    ]
    for i in range(rows):
        lines.append(
            "INSERT INTO `tabSales Invoice` VALUES ('SINV-%05d','Administrator',%d.%02d,'%032x');"
            % (i, rnd.randint(0, 99999), rnd.randint(0, 99), rnd.getrandbits(128))
        )
    if trailer:
        lines += ["/*!40111 SET SQL_NOTES=@OLD_SQL_NOTES */;", "", "-- Dump completed on 2026-01-13  2:00:03"]
    return ("\n".join(lines) + "\n").encode()


@functools.lru_cache(maxsize=1)
def big_dump() -> bytes:
    """A ~10 MiB gzip dump (stored, so quick to make): more than two 4 MiB copy chunks."""
    return gzip.compress(dump_text(90000), compresslevel=0)


def write_dump(path: Path, rows: int = 200, *, trailer: bool = True, members: int = 1) -> Path:
    text = dump_text(rows, trailer=trailer)
    step = -(-len(text) // members)
    path.write_bytes(b"".join(gzip.compress(text[i : i + step]) for i in range(0, len(text), step)))
    return path


def tar_bytes(site: str = SITE, *, private: bool = False, compress: bool = False, long_name: bool = False) -> bytes:
    buf = io.BytesIO()
    kind = "private/files" if private else "public/files"
    with tarfile.open(fileobj=buf, mode="w:gz" if compress else "w") as tar:
        for directory in (f"./{site}", f"./{site}/{kind.split('/')[0]}", f"./{site}/{kind}"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        names = ["logo.png", "invoice-0001.pdf"] + (["x" * 150 + ".txt"] if long_name else [])
        for index, name in enumerate(names):
            data = random.Random(index).randbytes(1000 + 700 * index)
            info = tarfile.TarInfo(f"./{site}/{kind}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def bench_backup(directory: Path, *, compress: bool = False, dump_rows: int = 200) -> dict[str, str]:
    """The four files of `bench --site S backup --with-files`, named as bench names them."""
    directory.mkdir(parents=True, exist_ok=True)
    prefix = directory / "20260113_020000-site1_example_com"
    ext = "tgz" if compress else "tar"
    write_dump(Path(f"{prefix}-database.sql.gz"), dump_rows)
    Path(f"{prefix}-files.{ext}").write_bytes(tar_bytes(compress=compress))
    Path(f"{prefix}-private-files.{ext}").write_bytes(tar_bytes(private=True, compress=compress))
    Path(f"{prefix}-site_config_backup.json").write_text(json.dumps({"db_name": "_abc", "db_password": "x"}))
    return {
        "database": f"{prefix}-database.sql.gz",
        "files": f"{prefix}-files.{ext}",
        "private-files": f"{prefix}-private-files.{ext}",
        "site_config": f"{prefix}-site_config_backup.json",
    }


@pytest.fixture
def store(tmp_path) -> BackupStore:
    return BackupStore(str(tmp_path / "backups"), RETENTION)


@pytest.fixture
def sources(tmp_path) -> dict[str, str]:
    return bench_backup(tmp_path / "bench" / "sites" / SITE / "private" / "backups")


def site_dir(store: BackupStore, stack: str = STACK, site: str = SITE) -> Path:
    return Path(store.base_path) / stack / site


def entries(directory: Path) -> list[str]:
    """What is in a site's backup dir besides the lock file."""
    return sorted(p.name for p in directory.iterdir() if p.name != ".lock") if directory.exists() else []


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- publish: the happy path ----


def test_publish_copies_every_part_under_its_final_name_with_a_matching_manifest(store, sources):
    manifest = store.publish(STACK, SITE, sources, created=WHEN)

    ts = "2026-01-13_02-00-03"
    assert manifest["id"] == ts
    assert manifest["created"] == "2026-01-13T02:00:03Z"
    assert manifest["verified"] is True
    assert (manifest["stack"], manifest["site"]) == (STACK, SITE)
    directory = site_dir(store)
    assert entries(directory) == sorted(
        [f"{ts}.sql.gz", f"{ts}.files.tar", f"{ts}.private-files.tar", f"{ts}.site_config.json", f"{ts}.json"]
    )
    by_part = {f["part"]: f for f in manifest["files"]}
    for part, source in sources.items():
        published = directory / by_part[part]["name"]
        assert published.read_bytes() == Path(source).read_bytes()
        assert by_part[part]["sha256"] == sha256_of(published)
        assert by_part[part]["size"] == published.stat().st_size
    assert json.loads((directory / f"{ts}.json").read_text()) == manifest
    assert "-- Dump completed" in manifest["verification"]
    assert "tar readable" in manifest["verification"]


def test_publish_creates_private_directories_and_files(store, sources):
    store.publish(STACK, SITE, sources, created=WHEN)
    for directory in (Path(store.base_path), Path(store.base_path) / STACK, site_dir(store)):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o750
    for path in site_dir(store).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o007 == 0


def test_publish_needs_only_the_database_dump(store, sources):
    manifest = store.publish(STACK, SITE, {"database": sources["database"]}, created=WHEN)
    assert [f["part"] for f in manifest["files"]] == ["database"]
    assert entries(site_dir(store)) == ["2026-01-13_02-00-03.json", "2026-01-13_02-00-03.sql.gz"]


def test_compressed_file_archives_are_published_as_tgz(store, tmp_path):
    sources = bench_backup(tmp_path / "compressed", compress=True)
    manifest = store.publish(STACK, SITE, sources, created=WHEN)
    assert {f["name"] for f in manifest["files"]} >= {
        "2026-01-13_02-00-03.files.tgz",
        "2026-01-13_02-00-03.private-files.tgz",
    }


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_archives_written_by_gnu_tar_with_long_names_verify(store, tmp_path, sources):
    root = tmp_path / "sites"
    files = root / SITE / "public" / "files"
    files.mkdir(parents=True)
    (files / ("y" * 180 + ".pdf")).write_bytes(os.urandom(5000))
    (files / "empty.txt").write_bytes(b"")
    (files / "link.txt").symlink_to("empty.txt")
    archive = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(root), f"./{SITE}/public/files"], check=True)
    pax = tmp_path / "pax.tar"
    pax.write_bytes(tar_bytes(long_name=True))
    manifest = store.publish(STACK, SITE, {**sources, "files": str(archive), "private-files": str(pax)}, created=WHEN)
    with tarfile.open(archive) as gnu, tarfile.open(pax) as posix:
        counts = (len(gnu.getmembers()), len(posix.getmembers()))
    assert counts == (4, 6)
    assert "files: tar readable to the end (4 entries)" in manifest["verification"]
    assert "private-files: tar readable to the end (6 entries)" in manifest["verification"]


def test_a_dump_of_several_gzip_members_is_accepted(store, tmp_path):
    dump = write_dump(tmp_path / "multi.sql.gz", 2000, members=3)
    manifest = store.publish(STACK, SITE, {"database": str(dump)}, created=WHEN)
    assert "3 members" in manifest["verification"]


def test_a_dump_larger_than_one_chunk_goes_through_the_threaded_copy(store, tmp_path):
    dump = tmp_path / "big.sql.gz"
    dump.write_bytes(big_dump())
    assert dump.stat().st_size > 2 * (4 << 20)
    manifest = store.publish(STACK, SITE, {"database": str(dump)}, created=WHEN)
    assert manifest["files"][0]["sha256"] == sha256_of(dump)
    assert (site_dir(store) / "2026-01-13_02-00-03.sql.gz").read_bytes() == dump.read_bytes()


def test_a_second_backup_in_the_same_second_gets_the_next_second(store, sources):
    first = store.publish(STACK, SITE, sources, created=WHEN)
    second = store.publish(STACK, SITE, sources, created=WHEN)
    assert (first["id"], second["id"]) == ("2026-01-13_02-00-03", "2026-01-13_02-00-04")


def test_naive_and_non_utc_times_are_stamped_in_utc(store, sources):
    from datetime import timedelta

    manifest = store.publish(
        STACK, SITE, sources, created=datetime(2026, 1, 13, 4, 0, 3, tzinfo=timezone(timedelta(hours=2)))
    )
    assert manifest["id"] == "2026-01-13_02-00-03"


# ---- publish: verification failures leave nothing behind ----


def _truncate(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _corrupt_second_header(data: bytes) -> bytes:
    # Header of the 4th entry (3 directory headers, then a file header + 1000 bytes padded to 1024).
    offset = 3 * 512 + 512 + 1024
    return data[:offset] + b"garbage!" + data[offset + 8 :]


def _cut_at_entry_boundary(data: bytes) -> bytes:
    return data[: 3 * 512 + 512 + 1024]


BROKEN = {
    "truncated gzip": ("database", lambda: _truncate(gzip.compress(dump_text(3000))), "gzip stream ended early"),
    "dump without trailer": (
        "database",
        lambda: gzip.compress(dump_text(trailer=False)),
        "does not end with '-- Dump completed'",
    ),
    "corrupt gzip data": ("database", lambda: _flip_middle(gzip.compress(dump_text(3000))), "is corrupt"),
    "not gzip at all": ("database", lambda: dump_text(), "is not a gzip file"),
    "garbage after gzip": ("database", lambda: gzip.compress(dump_text()) + b"PK\x03\x04junk", "unexpected data after"),
    "empty dump": ("database", lambda: b"", "is empty"),
    "truncated tar": (
        "files",
        lambda: tar_bytes()[: 3 * 512 + 512 + 1024 + 512 + 800],
        "ends in the middle of an entry",
    ),
    "corrupt tar header": ("files", lambda: _corrupt_second_header(tar_bytes()), "bad tar header"),
    "tar cut between entries": (
        "files",
        lambda: _cut_at_entry_boundary(tar_bytes()),
        "without the tar end-of-archive marker",
    ),
    "truncated tgz": ("private-files", lambda: _truncate(tar_bytes(compress=True)), "gzip stream ended early"),
    "not a tar": ("private-files", lambda: b"hello world\n" * 100, "bad tar header"),
    "bad json": ("site_config", lambda: b'{"db_name": "x",', "is not valid JSON"),
    "json but not an object": ("site_config", lambda: b'["db_name"]', "is not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_part_that_fails_verification_publishes_nothing_and_says_why(store, sources, tmp_path, case):
    part, make, reason = BROKEN[case]
    broken = tmp_path / f"broken-{part}"
    broken.write_bytes(make())
    with pytest.raises(BackupError) as failure:
        store.publish(STACK, SITE, {**sources, part: str(broken)}, created=WHEN)
    message = str(failure.value)
    assert reason in message
    assert message.startswith(LABELS[part])
    assert entries(site_dir(store)) == []  # no final name, no manifest, no temp


def test_a_large_truncated_dump_fails_in_the_threaded_copy_and_leaves_nothing(store, tmp_path):
    data = big_dump()
    dump = tmp_path / "cut.sql.gz"
    dump.write_bytes(data[: len(data) - 5000])
    with pytest.raises(BackupError, match="gzip stream ended early"):
        store.publish(STACK, SITE, {"database": str(dump)}, created=WHEN)
    assert entries(site_dir(store)) == []


def test_a_failed_backup_leaves_earlier_backups_untouched(store, sources, tmp_path):
    good = store.publish(STACK, SITE, sources, created=WHEN)
    before = entries(site_dir(store))
    broken = tmp_path / "broken.sql.gz"
    broken.write_bytes(_truncate(gzip.compress(dump_text(3000))))
    with pytest.raises(BackupError):
        store.publish(STACK, SITE, {**sources, "database": str(broken)}, created=WHEN)
    assert entries(site_dir(store)) == before
    assert store.list_backups(STACK, SITE)[0]["id"] == good["id"]


def test_a_write_error_is_reported_and_cleaned_up(store, sources, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def fsync_failing_on_the_third_part(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_on_the_third_part)
    with pytest.raises(BackupError, match="No space left on device"):
        store.publish(STACK, SITE, sources, created=WHEN)
    monkeypatch.undo()
    assert entries(site_dir(store)) == []


def test_too_little_free_space_refuses_before_copying(store, sources, monkeypatch):
    monkeypatch.setattr(store, "disk_usage", lambda: {"path": store.base_path, "free_bytes": 10, "total_bytes": 100})
    with pytest.raises(BackupError, match="not enough free space"):
        store.publish(STACK, SITE, sources, created=WHEN)
    assert entries(site_dir(store)) == []


def test_missing_database_or_source_file_is_a_clear_error(store, sources, tmp_path):
    with pytest.raises(BackupError, match="no database dump"):
        store.publish(STACK, SITE, {"files": sources["files"]})
    with pytest.raises(BackupError, match="is missing"):
        store.publish(STACK, SITE, {**sources, "files": str(tmp_path / "nope.tar")})
    assert entries(site_dir(store)) == []


def test_a_symlink_or_fifo_in_place_of_a_source_is_refused(store, sources, tmp_path):
    link = tmp_path / "link.sql.gz"
    link.symlink_to(sources["database"])
    with pytest.raises(BackupError, match="cannot read"):
        store.publish(STACK, SITE, {"database": str(link)})
    fifo = tmp_path / "fifo.sql.gz"
    os.mkfifo(fifo)
    with pytest.raises(BackupError, match="not a regular file"):
        store.publish(STACK, SITE, {"database": str(fifo)})  # must not block waiting for a writer


def test_malformed_names_are_refused(store, sources):
    with pytest.raises(BadBackupRequest):
        store.publish("../etc", SITE, sources)
    with pytest.raises(BadBackupRequest):
        store.publish(STACK, "a/b", sources)


def test_an_overlapping_publish_waits_for_the_lock_then_gives_up_clearly(tmp_path, sources):
    store = BackupStore(str(tmp_path / "backups"), RETENTION, lock_wait_seconds=0.2)
    store.publish(STACK, SITE, sources, created=WHEN)
    holder = os.open(site_dir(store) / ".lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(BackupError, match="still running"):
            store.publish(STACK, SITE, sources)
    finally:
        os.close(holder)
    assert store.publish(STACK, SITE, sources)["verified"]


# ---- crash: temp leftovers ----


CRASHING_PUBLISH = textwrap.dedent(
    """
    import os, sys, threading
    from fmappliance.agent.backups import BackupStore, publish
    real_write = publish.write_all
    state = {"n": 0}
    def slow_write(fd, view):
        real_write(fd, view)
        state["n"] += 1
        if state["n"] == 2:
            print("copying", flush=True)
            threading.Event().wait()   # stay mid-copy until killed
    publish.write_all = slow_write
    store = BackupStore(sys.argv[1], {"daily": 7, "weekly": 4, "monthly": 12})
    store.publish("prod", "site1.example.com", {"database": sys.argv[2]})
    """
)


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_temp_files_of_a_killed_publish_are_removed_at_start(store, tmp_path):
    dump = tmp_path / "big.sql.gz"
    dump.write_bytes(big_dump())
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_PUBLISH, store.base_path, str(dump)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "copying"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
        child.stdout.close()
    left = entries(site_dir(store))
    assert len(left) == 1 and left[0].startswith(".") and ".tmp-" in left[0]  # nothing under a final name
    assert store.list_backups(STACK, SITE) == []

    other = site_dir(store, "erp", "erp.example.com")
    other.mkdir(parents=True)
    (other / ".2026-01-01_00-00-00.json.tmp-0a1b2c").write_text("{")
    (other / "notes.txt").write_text("not ours")  # not a temp name: left alone

    assert store.clean_temp_files() == 2
    assert entries(site_dir(store)) == []
    assert entries(other) == ["notes.txt"]
    # The killed process's lock died with it.
    assert store.publish(STACK, SITE, {"database": str(dump)})["verified"]


def test_clean_temp_files_on_a_missing_base_path_removes_nothing(tmp_path):
    assert BackupStore(str(tmp_path / "absent"), RETENTION).clean_temp_files() == 0


# ---- listing ----


def test_listing_is_newest_first_in_the_api_shape(store, sources):
    ids = [
        store.publish(STACK, SITE, sources, created=datetime(2026, 1, day, 2, 0, 0, tzinfo=timezone.utc))["id"]
        for day in (3, 1, 2)
    ]
    listing = store.list_backups(STACK, SITE)
    assert [b["id"] for b in listing] == sorted(ids, reverse=True)
    newest = listing[0]
    assert set(newest) == {"id", "created", "stack", "site", "verified", "size", "label", "encrypted", "apps", "files"}
    assert newest["label"] == "manual" and newest["encrypted"] is False
    assert newest["size"] == sum(f["size"] for f in newest["files"])
    assert set(newest["files"][0]) == {"name", "part", "size", "sha256"}
    assert store.last_backup(STACK, SITE) == {
        "id": newest["id"],
        "created": newest["created"],
        "size": newest["size"],
        "verified": True,
    }


def test_no_backups_yet_lists_nothing(store):
    assert store.list_backups(STACK, SITE) == []
    assert store.last_backup(STACK, SITE) is None


def test_broken_or_misplaced_manifests_are_ignored(store, sources):
    store.publish(STACK, SITE, sources, created=WHEN)
    directory = site_dir(store)
    (directory / "2026-02-01_00-00-00.json").write_text("{not json")
    moved = json.loads((directory / "2026-01-13_02-00-03.json").read_text())
    moved["id"] = "2026-03-01_00-00-00"
    moved["stack"] = "other"
    (directory / "2026-03-01_00-00-00.json").write_text(json.dumps(moved))
    assert [b["id"] for b in store.list_backups(STACK, SITE)] == ["2026-01-13_02-00-03"]
    assert store.last_backup(STACK, SITE)["id"] == "2026-01-13_02-00-03"


def test_listing_refuses_malformed_names(store):
    with pytest.raises(BadBackupRequest):
        store.list_backups("..", SITE)


def test_disk_usage_reports_the_nearest_existing_parent(tmp_path):
    usage = BackupStore(str(tmp_path / "not" / "yet"), RETENTION).disk_usage()
    assert usage["path"] == str(tmp_path / "not" / "yet")
    assert 0 < usage["free_bytes"] <= usage["total_bytes"]


# ---- open_published_file: only listed files, never a byte from elsewhere ----


@pytest.fixture
def published(store, sources, tmp_path):
    """prod/site1 with one backup, staging/site1 with another, and a secret outside base_path."""
    manifest = store.publish(STACK, SITE, sources, created=WHEN)
    other = store.publish("staging", SITE, sources, created=datetime(2026, 1, 14, 2, 0, 0, tzinfo=timezone.utc))
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET" * 100)
    return {"manifest": manifest, "other": other, "secret": secret}


def test_every_listed_file_and_the_manifest_can_be_opened(store, published):
    for entry in published["manifest"]["files"] + [{"name": "2026-01-13_02-00-03.json"}]:
        handle, st = store.open_published_file(STACK, SITE, entry["name"])
        with handle:
            data = handle.read()
        assert data == (site_dir(store) / entry["name"]).read_bytes()
        assert st.st_size == len(data)
        if "sha256" in entry:
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]


def test_a_base_path_that_is_itself_a_symlink_works(tmp_path, sources):
    real = tmp_path / "data" / "backups"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    store = BackupStore(str(tmp_path / "link"), RETENTION)
    manifest = store.publish(STACK, SITE, sources, created=WHEN)
    handle, _ = store.open_published_file(STACK, SITE, manifest["files"][0]["name"])
    with handle:
        assert hashlib.sha256(handle.read()).hexdigest() == manifest["files"][0]["sha256"]
    assert (real / STACK / SITE / f"{manifest['id']}.json").exists()


BAD_NAMES = [
    "../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2fsecret.txt",
    "..\\..\\secret.txt",
    "/etc/passwd",
    "2026-01-13_02-00-03.sql.gz\x00.txt",
    "2026-01-13_02-00-03.sql.gz\n",
    "2026-01-13_02-00-03.sql.gz/",
    "./2026-01-13_02-00-03.sql.gz",
    "２０２６-01-13_02-00-03.sql.gz",
    "2026-01-13_02-00-03.sql",
    ".lock",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_malformed_file_names_are_bad_requests(store, published, name):
    with pytest.raises(BadBackupRequest):
        store.open_published_file(STACK, SITE, name)


@pytest.mark.parametrize(
    "stack, site",
    [
        ("..", SITE),
        ("../prod", SITE),
        (STACK, ".."),
        (STACK, "a/../b"),
        (STACK, "site1\x00"),
        ("-rf", SITE),
        (STACK, "ѕite1.example.com"),
    ],
)
def test_malformed_stack_or_site_names_are_bad_requests(store, published, stack, site):
    with pytest.raises(BadBackupRequest):
        store.open_published_file(stack, site, "2026-01-13_02-00-03.sql.gz")


def test_a_well_formed_name_in_no_manifest_is_not_found(store, published):
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-04.sql.gz")
    # A stray file with a valid name but no manifest entry is never served.
    (site_dir(store) / "2026-01-13_02-00-03.files.tgz").write_bytes(b"stray")
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-03.files.tgz")


def test_another_stacks_file_is_not_found(store, published):
    name = published["other"]["files"][0]["name"]
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, name)
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, "unknown.example.com", name)
    with pytest.raises(BackupNotFound):
        store.open_published_file("unknown", SITE, name)


def test_a_symlink_in_place_of_a_published_file_is_not_followed(store, published):
    target = site_dir(store) / "2026-01-13_02-00-03.sql.gz"
    target.unlink()
    target.symlink_to(published["secret"])
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, target.name)


def test_a_symlink_in_place_of_the_manifest_is_not_followed(store, published, tmp_path):
    manifest = site_dir(store) / "2026-01-13_02-00-03.json"
    copy = tmp_path / "manifest-copy.json"
    copy.write_bytes(manifest.read_bytes())
    manifest.unlink()
    manifest.symlink_to(copy)
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-03.sql.gz")
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-03.json")


def test_a_symlinked_site_or_stack_directory_pointing_elsewhere_is_refused(store, published, sources, tmp_path):
    # An attacker's copy outside base_path with a manifest that matches its supposed place.
    outside = tmp_path / "elsewhere" / SITE
    outside.parent.mkdir()
    os.rename(site_dir(store), outside)
    site_dir(store).symlink_to(outside)
    with pytest.raises(BackupNotFound) as missing:
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-03.sql.gz")
    # The API's answer is one sentence (a 404); the detail stays for the agent's own messages.
    assert (missing.value.status, missing.value.message) == (404, "There is no such backup file.")
    assert str(missing.value) == f"No backup file 2026-01-13_02-00-03.sql.gz for {SITE} on {STACK}."
    assert store.list_backups(STACK, SITE) == []
    with pytest.raises(BackupError, match="is not a plain directory"):
        store.publish(STACK, SITE, sources)

    site_dir(store).unlink()
    os.rename(outside, site_dir(store))
    stack_dir = Path(store.base_path) / STACK
    os.rename(stack_dir, tmp_path / "elsewhere" / STACK)
    stack_dir.symlink_to(tmp_path / "elsewhere" / STACK)
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, "2026-01-13_02-00-03.sql.gz")


def test_a_hard_link_to_an_outside_file_is_refused(store, published):
    target = site_dir(store) / "2026-01-13_02-00-03.site_config.json"
    size = target.stat().st_size
    secret = published["secret"]
    secret.write_bytes(b"S" * size)  # same size as the listed file, so only the link count gives it away
    target.unlink()
    os.link(secret, target)
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, target.name)


def test_a_fifo_or_directory_in_place_of_a_published_file_is_refused(store, published):
    target = site_dir(store) / "2026-01-13_02-00-03.files.tar"
    target.unlink()
    os.mkfifo(target)
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, target.name)  # must not block
    target.unlink()
    target.mkdir()
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, target.name)


def test_a_file_changed_since_publication_is_not_served(store, published):
    target = site_dir(store) / "2026-01-13_02-00-03.sql.gz"
    with open(target, "ab") as handle:
        handle.write(b"appended")
    with pytest.raises(BackupNotFound):
        store.open_published_file(STACK, SITE, target.name)


# ---- the gzip check itself ----


def test_gzip_check_accepts_trailing_zero_padding_like_gzip_does():
    check = DumpCheck()
    data = gzip.compress(dump_text()) + b"\0" * 1000
    for start in range(0, len(data), 777):  # arbitrary chunk boundaries
        check.feed(data[start : start + 777])
    assert "Dump completed" in check.finish()


def test_gzip_check_holds_bounded_memory_on_a_gzip_bomb():
    # 64 MiB of zeros compress to ~64 KiB; the check must stream them, not inflate them in one go.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (16 << 20)
    data = (
        b"".join(compressor.compress(block) for _ in range(4))
        + compressor.compress(b"\n-- Dump completed\n")
        + compressor.flush()
    )
    sizes = []
    tail = bytearray()
    stream = GzipStream(lambda out: (sizes.append(len(out)), tail.extend(out[-64:])))
    stream.feed(data)
    stream.finish()
    assert tail.endswith(b"-- Dump completed\n")
    assert max(sizes) <= INFLATE_MAX_OUT
    assert sum(sizes) == (4 << 24) + len(b"\n-- Dump completed\n")


@pytest.mark.parametrize("slice_size, max_out", [(16 << 10, 32 << 10), (4 << 10, 16 << 10), (1 << 10, 1 << 10)])
def test_gzip_check_handles_member_ends_inside_a_capped_inflate_call(slice_size, max_out):
    # A member that ends while output is capped must hand the next member's bytes on exactly once.
    text = dump_text(4000)
    members = [gzip.compress(text[i : i + 100_000]) for i in range(0, len(text), 100_000)]
    received = []
    stream = GzipStream(received.append, slice_size=slice_size, max_out=max_out)
    data = b"".join(members)
    for start in range(0, len(data), 50_000):
        stream.feed(data[start : start + 50_000])
    stream.finish()
    assert stream.members == len(members)
    assert b"".join(received) == text


# ---- sources reached without following links below the root, sizes checked ---------------------


def test_sources_below_the_root_publish_normally(store, sources, tmp_path):
    manifest = store.publish(STACK, SITE, sources, created=WHEN, source_root=str(tmp_path / "bench"))
    assert manifest["verified"] is True and len(manifest["files"]) == 4


@pytest.mark.parametrize("linked", ["sites", f"sites/{SITE}", f"sites/{SITE}/private", f"sites/{SITE}/private/backups"])
def test_a_symlinked_directory_on_the_way_to_the_sources_is_refused_not_followed(store, tmp_path, linked):
    """Another bench's dump reached through a link planted in this bench is never published as this site's."""
    other = bench_backup(tmp_path / "other-bench" / "sites" / SITE / "private" / "backups", dump_rows=7)
    root = tmp_path / "bench"
    (root / linked).parent.mkdir(parents=True, exist_ok=True)
    (root / linked).symlink_to(tmp_path / "other-bench" / linked, target_is_directory=True)
    claimed = {part: str(root / "sites" / SITE / "private" / "backups" / Path(p).name) for part, p in other.items()}
    assert Path(claimed["database"]).is_file()  # following the link would find the other bench's dump
    with pytest.raises(BackupError, match=f"{root / linked} is a symbolic link or not a directory"):
        store.publish(STACK, SITE, claimed, created=WHEN, source_root=str(root))
    assert not site_dir(store).exists() or entries(site_dir(store)) == []


def test_a_source_outside_the_root_is_refused(store, sources, tmp_path):
    (tmp_path / "root").mkdir()
    with pytest.raises(BackupError, match="is not inside"):
        store.publish(STACK, SITE, sources, created=WHEN, source_root=str(tmp_path / "root"))


def test_a_symlinked_source_file_below_the_root_is_refused(store, sources, tmp_path):
    link = Path(sources["database"]).with_name("linked-database.sql.gz")
    link.symlink_to(sources["database"])
    with pytest.raises(BackupError, match="cannot read"):
        store.publish(STACK, SITE, {**sources, "database": str(link)}, source_root=str(tmp_path / "bench"))


@pytest.mark.parametrize("size", [1000, 9 << 20])  # the one-pass copy and the threaded one
@pytest.mark.parametrize("change", [-100, +100])
def test_a_source_that_changes_size_while_it_is_copied_is_refused(tmp_path, size, change):
    from fmappliance.agent.backups.publish import copy_verified
    from fmappliance.agent.backups.verify import CheckFailed

    class Anything:
        def feed(self, data):
            pass

    src = tmp_path / "src"
    src.write_bytes(os.urandom(size + change))
    with open(src, "rb") as handle, open(tmp_path / "dst", "wb") as out:
        # `size` is what the file measured when it was opened (and free space was checked for).
        with pytest.raises(CheckFailed, match=r"changed size while it was being copied"):
            copy_verified(handle.fileno(), out.fileno(), Anything(), size)
    # A growing file is not copied beyond the measured size plus one read.
    assert (tmp_path / "dst").stat().st_size <= size + (4 << 20)


def test_a_copy_out_of_a_container_needs_room_twice_on_one_disk(store, tmp_path, monkeypatch):
    import shutil as real_shutil

    staging = tmp_path / "staging"
    staging.mkdir()
    free = 1500
    monkeypatch.setattr(
        real_shutil, "disk_usage", lambda path: real_shutil._ntuple_diskusage(10_000, 10_000 - free, free)
    )
    store.check_room_for_copy(700, str(staging))  # 2 x 700 fit
    with pytest.raises(BackupError, match="needs 800 bytes twice"):
        store.check_room_for_copy(800, str(staging))
