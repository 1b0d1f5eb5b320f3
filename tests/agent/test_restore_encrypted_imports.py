"""Encrypted (-enc) bench backups and imported backup sets: verified, published, restored.

Through the real agent process over a socket, against the doubles (which encrypt with the real gpg).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from restore_support import (
    ENCRYPT_MARK,
    TARGETS,
    backup,
    content,
    listing,
    published_dir,
    restore,
    run_job,
    set_content,
    site_config,
    update_site_config,
)

from fmappliance.agent.backups import BackupError, BackupStore

KINDS = sorted(TARGETS)
BACKUP_KEY = "bk-Secret-7f3a!"


@pytest.fixture
def agent(world, agent_process):
    return agent_process()


def make_encrypting(world, stack, site, tag):
    update_site_config(world, stack, site, backup_encryption_key=BACKUP_KEY)
    set_content(world, stack, site, tag, extra=ENCRYPT_MARK + "\n")


@pytest.mark.parametrize("kind", KINDS)
def test_encrypted_backups_verify_publish_and_restore(world, agent, kind):
    stack, site = TARGETS[kind]
    make_encrypting(world, stack, site, "secret-monday")

    manifest = backup(agent, stack, site)

    assert manifest["encrypted"] is True
    names = {f["part"]: f["name"] for f in manifest["files"]}
    assert names["database"].endswith(".sql.gz.gpg") and names["files"].endswith(".files.tar.gpg")
    assert names["site_config"].endswith(".site_config.json")
    assert "database: decrypted, gzip stream complete" in manifest["verification"]
    # What is published is gpg data, not a readable dump.
    assert b"secret-monday" not in (published_dir(world, stack, site) / names["database"]).read_bytes()
    assert listing(agent, stack, site)[0]["encrypted"] is True

    set_content(world, stack, site, "tuesday")
    job = restore(agent, stack, site, manifest["id"])

    assert "-- content tag: secret-monday" in content(world, stack, site)
    assert BACKUP_KEY not in job["output"] and BACKUP_KEY not in job["message"]
    assert BACKUP_KEY not in (world.root / "agent.log").read_text()


def test_an_encrypted_backup_whose_key_is_missing_is_refused_before_anything_changes(world, agent):
    stack, site = TARGETS["compose"]
    make_encrypting(world, stack, site, "locked")
    manifest = backup(agent, stack, site)
    # The backup's own site config loses its key (the manifest is kept consistent with it).
    directory = published_dir(world, stack, site)
    entry = next(f for f in manifest["files"] if f["part"] == "site_config")
    config = json.loads((directory / entry["name"]).read_text())
    del config["backup_encryption_key"]
    data = json.dumps(config).encode()
    (directory / entry["name"]).write_bytes(data)
    doc = json.loads((directory / f"{manifest['id']}.json").read_text())
    for f in doc["files"]:
        if f["part"] == "site_config":
            f.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    (directory / f"{manifest['id']}.json").write_text(json.dumps(doc))
    before = set_content(world, stack, site, "now")

    job = restore(agent, stack, site, manifest["id"], expect="failed")

    assert job["message"].startswith("Preflight failed, nothing was changed:")
    assert "backup_encryption_key" in job["message"]
    assert content(world, stack, site) == before
    assert "maintenance_mode" not in site_config(world, stack, site)


def _gpg_encrypt(src: Path, dst: Path, key: str, home: Path) -> None:
    home.mkdir(mode=0o700, exist_ok=True)
    read_fd, write_fd = os.pipe()
    os.write(write_fd, key.encode() + b"\n")
    os.close(write_fd)
    try:
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(home),
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase-fd",
                str(read_fd),
                "--symmetric",
                "--output",
                str(dst),
                str(src),
            ],
            pass_fds=(read_fd,),
            check=True,
            capture_output=True,
        )
    finally:
        os.close(read_fd)


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_an_encrypted_part_that_the_key_does_not_open_is_not_published(tmp_path):
    from test_backups import bench_backup

    plain = bench_backup(tmp_path / "bench")
    sources = dict(plain)
    for part in ("database", "files"):
        enc = Path(plain[part].replace(f"-{part}.", f"-{part}-enc."))
        _gpg_encrypt(Path(plain[part]), enc, "the-real-key", tmp_path / "gnupg")
        sources[part] = str(enc)
    config = Path(plain["site_config"].replace(".json", "-enc.json"))
    config.write_text(json.dumps({"db_name": "_x", "backup_encryption_key": "a-wrong-key"}))
    sources["site_config"] = str(config)
    store = BackupStore(str(tmp_path / "backups"), {"daily": 7, "weekly": 4, "monthly": 12})

    with pytest.raises(BackupError, match="could not be decrypted"):
        store.publish("prod", "site1.example.com", sources)
    assert store.list_backups("prod", "site1.example.com") == []

    config.write_text(json.dumps({"db_name": "_x", "backup_encryption_key": "the-real-key"}))
    manifest = store.publish("prod", "site1.example.com", sources)
    assert manifest["encrypted"] is True and "decrypted, tar readable" in manifest["verification"]


# ---------------------------------------------------------------------------------------------- imports


def bench_set_elsewhere(world, tag: str) -> list[Path]:
    """What `bench backup --with-files` of site2 wrote (with content ``tag``), as if made on another server."""
    set_content(world, "prod", "site2.example.com", tag)
    before = set(
        (world.doubles.volume_bench(world.compose_project) / "sites/site2.example.com/private/backups").iterdir()
    )
    res = subprocess.run(
        [
            world.docker,
            "compose",
            "--project-directory",
            str(world.compose_path),
            "exec",
            "-T",
            "backend",
            "bench",
            "--site",
            "site2.example.com",
            "backup",
            "--with-files",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    after = set(
        (world.doubles.volume_bench(world.compose_project) / "sites/site2.example.com/private/backups").iterdir()
    )
    return sorted(after - before)


def test_imports_are_listed_verified_published_and_restored(world, agent):
    inbox = Path(world.config["backups"]["base_path"]) / "_import"
    inbox.mkdir(parents=True)
    for path in bench_set_elsewhere(world, "from-elsewhere"):
        shutil.move(path, inbox / path.name)
    name = next(p.name for p in inbox.iterdir() if p.name.endswith("-database.sql.gz"))[: -len("-database.sql.gz")]
    (inbox / "20260101_000000-old_example_com-files.tar").write_bytes(b"\0" * 1024)  # a set without its dump

    status, res = agent.request("GET", "/imports")
    assert status == 200
    sets = {s["name"]: s for s in res["imports"]}
    assert sets[name]["problems"] == [] and len(sets[name]["files"]) == 4
    assert all(set(f) == {"name", "size"} for f in sets[name]["files"])
    assert any("no database dump" in p for p in sets["20260101_000000-old_example_com"]["problems"])

    job = run_job(agent, {"action": "import_backup", "stack": "prod", "site": "site1.example.com", "name": name})
    imported = job["result"]["backup"]
    assert imported["label"] == "imported"
    assert listing(agent, "prod", "site1.example.com")[0]["label"] == "imported"
    assert not any(p.name.startswith(name) for p in inbox.iterdir())

    set_content(world, "prod", "site1.example.com", "local")
    restore(agent, "prod", "site1.example.com", imported["id"])
    assert "-- content tag: from-elsewhere" in content(world, "prod", "site1.example.com")

    # A partial set is refused with its reason and left where it is.
    job = run_job(
        agent,
        {
            "action": "import_backup",
            "stack": "prod",
            "site": "site1.example.com",
            "name": "20260101_000000-old_example_com",
        },
        expect="failed",
    )
    assert "no database dump" in job["message"] and "left in place" in job["message"]
    assert (inbox / "20260101_000000-old_example_com-files.tar").exists()


def test_a_damaged_import_is_refused_and_left_in_place(world, agent):
    inbox = Path(world.config["backups"]["base_path"]) / "_import"
    inbox.mkdir(parents=True)
    for path in bench_set_elsewhere(world, "cut"):
        shutil.move(path, inbox / path.name)
    dump = next(p for p in inbox.iterdir() if p.name.endswith("-database.sql.gz"))
    dump.write_bytes(dump.read_bytes()[:-40])
    name = dump.name[: -len("-database.sql.gz")]

    job = run_job(
        agent, {"action": "import_backup", "stack": "prod", "site": "site1.example.com", "name": name}, expect="failed"
    )

    assert "refused and left in place" in job["message"] and "truncated" in job["message"]
    assert len([p for p in inbox.iterdir() if p.name.startswith(name)]) == 4
    assert listing(agent, "prod", "site1.example.com") == []


@pytest.mark.parametrize("name, status", [("20260101_000000-nothing_here", 404), ("../etc/passwd", 400), ("", 400)])
def test_bad_import_requests_are_refused(world, agent, name, status):
    code, res = agent.request(
        "POST", "/action", {"action": "import_backup", "stack": "prod", "site": "site1.example.com", "name": name}
    )
    assert code == status, res
    assert agent.request("GET", "/jobs")[1]["jobs"] == []
