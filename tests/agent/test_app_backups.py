"""Backup listing and download routes, wired through the agent app after a real backup_site job."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support.wsgi import wait_job


@pytest.fixture
def backup(client, world):
    res = client.post_action("backup_site", "prod", "site1.example.com")
    job = wait_job(client, res.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    return job["result"]["backup"]


def test_listing_shows_the_published_backup_newest_first(client, backup):
    body = client.get("/backups/prod/site1.example.com").json()
    assert [b["id"] for b in body["backups"]] == [backup["id"]]
    entry = body["backups"][0]
    assert entry["verified"] is True and entry["stack"] == "prod" and entry["site"] == "site1.example.com"
    assert {f["name"] for f in entry["files"]} == {f["name"] for f in backup["files"]}
    assert client.get("/backups/prod/site2.example.com").json() == {"backups": []}


def test_every_listed_file_downloads_whole_with_matching_checksum(client, world, backup):
    for entry in backup["files"]:
        res = client.get(f"/backups/prod/site1.example.com/{entry['name']}")
        assert res.status == 200
        assert int(res.headers["content-length"]) == entry["size"] == len(res.body)
        assert hashlib.sha256(res.body).hexdigest() == entry["sha256"]
        assert res.headers["content-disposition"] == f'attachment; filename="{entry["name"]}"'
        assert res.headers["accept-ranges"] == "bytes"


def test_head_and_range_requests(client, backup):
    name = next(f["name"] for f in backup["files"] if f["part"] == "database")
    size = next(f["size"] for f in backup["files"] if f["part"] == "database")
    head = client.request("HEAD", f"/backups/prod/site1.example.com/{name}")
    assert head.status == 200 and head.body == b"" and int(head.headers["content-length"]) == size
    part = client.get(f"/backups/prod/site1.example.com/{name}", headers={"Range": "bytes=0-9"})
    assert part.status == 206 and len(part.body) == 10 and part.body[:2] == b"\x1f\x8b"
    assert part.headers["content-range"] == f"bytes 0-9/{size}"
    assert client.get(f"/backups/prod/site1.example.com/{name}", headers={"Range": f"bytes={size + 10}-"}).status == 416


def test_files_of_other_sites_stacks_or_unlisted_names_are_not_served(client, world, backup):
    name = backup["files"][0]["name"]
    assert client.get(f"/backups/prod/site2.example.com/{name}").status == 404
    assert client.get(f"/backups/erp/erp.localhost/{name}").status == 404
    stray = Path(world.config["backups"]["base_path"]) / "prod" / "site1.example.com" / "2020-01-01_00-00-00.sql.gz"
    stray.write_bytes(b"not in any manifest")
    unlisted = client.get("/backups/prod/site1.example.com/2020-01-01_00-00-00.sql.gz")
    assert unlisted.status == 404
    # One sentence for every way a file is not served (BackupNotFound's detail stays in the agent).
    assert unlisted.json() == {"success": False, "message": "There is no such backup file."}
    assert client.get("/backups/prod/site1.example.com/.lock").status == 400
    assert client.get("/backups/prod/site1.example.com/..").status == 400
