"""Offsite copies with the real restic against a real local S3 server (moto_server on a loopback port)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from support.polling import wait_for
from support.ports import refused_port
from test_backups import bench_backup

from fmappliance.agent.backups import BackupStore
from fmappliance.agent.offsite import Offsite, OffsiteFailed

STACK, SITE = "prod", "site1.example.com"
PASSWORD = "s3-repo-pass-Lm27Qa"
SECRET = "moto-secret-key-Pp90zX"
MOTO = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
pytestmark = pytest.mark.skipif(
    shutil.which("restic") is None or not os.path.exists(MOTO), reason="restic or moto[server] is not installed"
)


class Ctx:
    def __init__(self):
        self.lines: list[str] = []
        self.message = None

    def log(self, text):
        self.lines.append(text)

    def deadline_left(self):
        return 600.0


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def s3_server(tmp_path):
    log = tmp_path / "moto.log"
    # port 0: moto_server binds a free port and names it ("Running on http://127.0.0.1:PORT").
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", "0"], stdout=open(log, "wb"), stderr=subprocess.STDOUT)

    def bound_port() -> int | None:
        found = re.findall(r"Running on http://127\.0\.0\.1:(\d+)", log.read_text(errors="replace"))
        return int(found[-1]) if found else None

    try:
        wait_for(lambda: bound_port() is not None and _answers(bound_port()), timeout=60, what="moto_server")
        yield bound_port()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def private_file(path: Path, text: str) -> str:
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def s3_world(tmp_path, s3_server):
    store = BackupStore(str(tmp_path / "backups"), {"daily": 7})
    state = tmp_path / "state"
    state.mkdir()
    cfg = {
        "offsite": {
            "repository": f"s3:http://127.0.0.1:{s3_server}/fmappliance-test/offsite",
            "password_file": private_file(tmp_path / "pw", PASSWORD + "\n"),
            "env_file": private_file(
                tmp_path / "env",
                f"AWS_ACCESS_KEY_ID=AKIDMOTO\nAWS_SECRET_ACCESS_KEY={SECRET}\nAWS_DEFAULT_REGION=us-east-1\n",
            ),
            "options": ["s3.bucket-lookup=path"],
            "retention": {"daily": 7},
            "check_subset": "5%",
            "limit_upload_kbps": 0,
            "restic_binary": "restic",
        }
    }
    return store, Offsite(cfg, store, str(state)), cfg, tmp_path


def test_copy_list_check_and_byte_identical_restore_over_s3(s3_world):
    store, offsite, _cfg, tmp = s3_world
    sources = bench_backup(tmp / "bench", dump_rows=500)
    manifest = store.publish(STACK, SITE, sources, created=datetime.now(timezone.utc) - timedelta(minutes=3))
    ctx = Ctx()
    assert offsite.copy_site(ctx, STACK, SITE)["copied"] == [manifest["id"]]
    assert any("restic init" in line for line in ctx.lines)
    assert [s["backup"] for s in offsite.snapshots(STACK, SITE, refresh=True)] == [manifest["id"]]
    check = Ctx()
    offsite.check(check)
    assert "passed" in check.message
    folder, _ = offsite.restore_into(STACK, SITE, manifest["id"], str(tmp / "restored"))
    for f in manifest["files"]:
        restored = (Path(folder) / f["name"]).read_bytes()
        assert restored == (Path(store.base_path) / STACK / SITE / f["name"]).read_bytes()
        assert hashlib.sha256(restored).hexdigest() == f["sha256"]
    assert not any(SECRET in line or PASSWORD in line for line in ctx.lines + check.lines)


def test_a_server_that_is_down_fails_with_its_sentence_and_is_caught_up(s3_world, s3_server):
    store, offsite, cfg, tmp = s3_world
    manifest = store.publish(
        STACK, SITE, bench_backup(tmp / "bench"), created=datetime.now(timezone.utc) - timedelta(minutes=3)
    )
    good = cfg["offsite"]["repository"]
    with refused_port() as down_port:
        cfg["offsite"]["repository"] = good.replace(str(s3_server), str(down_port))
        with pytest.raises(OffsiteFailed) as down:
            offsite.copy_site(Ctx(), STACK, SITE)
    assert "could not be reached" in str(down.value) and SECRET not in str(down.value)
    assert [b["id"] for b in store.list_backups(STACK, SITE)] == [manifest["id"]]
    cfg["offsite"]["repository"] = good
    assert offsite.copy_site(Ctx(), STACK, SITE)["copied"] == [manifest["id"]]
