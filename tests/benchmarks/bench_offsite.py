"""Offsite copy of a ~1 GiB backup to a local S3 server (moto_server) vs `restic backup` of the same files by hand.

Goals: the offsite_copy body (Offsite.copy_site: list, copy, forget --prune, list again) takes at most 1.1x the
time of one hand-run `restic backup` of the same files to an equally fresh repository on the same server; and a
second, unchanged copy (another backup id holding the same bytes) uploads < 1 % of the bytes (deduplication).
Both repositories are initialised before the clocks start.  The backup's files part is incompressible random
data, so neither side gains from compression.  BENCH_OFFSITE_MIB sets the size (default 1024).

Run from the repository root: .venv/bin/python tests/benchmarks/bench_offsite.py
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))

from support.polling import wait_for  # noqa: E402
from support.ports import free_port  # noqa: E402
from test_backups import bench_backup  # noqa: E402

from fmappliance.agent.backups import BackupStore  # noqa: E402
from fmappliance.agent.offsite import Offsite  # noqa: E402

SIZE = int(os.environ.get("BENCH_OFFSITE_MIB", "1024")) << 20
MOTO = shutil.which("moto_server") or os.path.join(os.path.dirname(sys.executable), "moto_server")
RESTIC = shutil.which("restic")


class Ctx:
    message = None

    def log(self, text):
        pass

    def deadline_left(self):
        return 86400.0


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def big_files_tar(path: Path, size: int) -> None:
    blob = path.with_suffix(".blob")
    with open(blob, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20))
            fh.write(chunk)
            left -= len(chunk)
    with tarfile.open(path, "w") as tar:
        tar.add(blob, arcname="files/upload.bin")
    blob.unlink()


def main() -> int:
    if RESTIC is None or not os.path.exists(MOTO):
        print("bench_offsite: restic or moto_server missing (make .venv/.installed, tests/install_system_deps.sh)")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bench-offsite-"))
    port = free_port()
    server = subprocess.Popen(
        [MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: answers(port), timeout=60, what="moto_server")
        pw = tmp / "pw"
        pw.write_text("bench-password\n")
        pw.chmod(0o600)
        env_file = tmp / "env"
        env_file.write_text(
            "AWS_ACCESS_KEY_ID=AKIDBENCH\nAWS_SECRET_ACCESS_KEY=benchsecret\nAWS_DEFAULT_REGION=us-east-1\n"
        )
        env_file.chmod(0o600)
        base = f"s3:http://127.0.0.1:{port}/bench"
        cfg = {
            "offsite": {
                "repository": base + "/appliance",
                "password_file": str(pw),
                "env_file": str(env_file),
                "options": ["s3.bucket-lookup=path"],
                "retention": {"daily": 7, "weekly": 4, "monthly": 12},
                "check_subset": "5%",
                "limit_upload_kbps": 0,
                "restic_binary": "restic",
            }
        }
        sources = bench_backup(tmp / "bench")
        big_files_tar(Path(sources["files"]), SIZE)
        store = BackupStore(str(tmp / "backups"), {"daily": 7})
        now = datetime.now(timezone.utc)
        first = store.publish("prod", "site1.example.com", sources, created=now - timedelta(minutes=10))
        (tmp / "state").mkdir()
        offsite = Offsite(cfg, store, str(tmp / "state"))
        offsite.ensure_repository()
        hand_env = {
            **os.environ,
            "RESTIC_REPOSITORY": base + "/by-hand",
            "RESTIC_PASSWORD_FILE": str(pw),
            "RESTIC_CACHE_DIR": str(tmp / "hand-cache"),
            "AWS_ACCESS_KEY_ID": "AKIDBENCH",
            "AWS_SECRET_ACCESS_KEY": "benchsecret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        hand = [RESTIC, "-o", "s3.bucket-lookup=path"]
        subprocess.run([*hand, "init"], env=hand_env, check=True, capture_output=True)
        site_dir = Path(store.base_path) / "prod" / "site1.example.com"
        files = [str(site_dir / f["name"]) for f in first["files"]] + [str(site_dir / (first["id"] + ".json"))]

        start = time.monotonic()
        subprocess.run([*hand, "backup", "--json", *files], env=hand_env, check=True, capture_output=True)
        by_hand = time.monotonic() - start
        start = time.monotonic()
        result = offsite.copy_site(Ctx(), "prod", "site1.example.com")
        ours = time.monotonic() - start
        assert result["copied"] == [first["id"]], result

        store.publish("prod", "site1.example.com", sources, created=now - timedelta(minutes=5))
        second = offsite.copy_site(Ctx(), "prod", "site1.example.com")
        share = second["bytes_sent"] / max(1, sum(f["size"] for f in first["files"]))

        ratio = ours / by_hand
        print(f"backup size {SIZE >> 20} MiB: offsite_copy {ours:.1f} s, restic backup by hand {by_hand:.1f} s")
        print(f"goal offsite_copy <= 1.1x restic by hand: {ratio:.2f}x {'PASS' if ratio <= 1.1 else 'MISS'}")
        print(
            f"goal second unchanged copy uploads < 1 % of the bytes: {second['bytes_sent']} bytes "
            f"({share * 100:.3f} %) {'PASS' if share < 0.01 else 'MISS'}"
        )
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
