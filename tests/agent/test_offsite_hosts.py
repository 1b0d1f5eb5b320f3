"""Two servers, one restic repository, the same stack and site names: each lists, prunes and restores
only its own copies (restic --host = its fleet name once joined).  Real restic, local-path repository.

Before hosts followed the server every appliance wrote ``--host fmappliance`` and pruned by tags alone,
so the second server's retention would have deleted the first one's copies.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from test_backups import bench_backup
from test_offsite import PASSWORD, Ctx, private_file

from fmappliance.agent.backups import BackupStore
from fmappliance.agent.offsite import Offsite, OffsiteFailed

STACK = "prod"
SITE = "site1.example.com"
pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")


def _server(tmp_path, name: str, repo, password_file: str):
    root = tmp_path / name
    store = BackupStore(str(root / "backups"), {"daily": 7, "weekly": 4, "monthly": 12})
    state = root / "state"
    state.mkdir(parents=True)
    cfg = {
        "offsite": {
            "repository": str(repo),
            "password_file": password_file,
            "env_file": None,
            "options": [],
            "retention": {"daily": 2, "weekly": 0, "monthly": 0},
            "check_subset": "100%",
            "limit_upload_kbps": 0,
            "restic_binary": "restic",
            "host": "",
        }
    }
    return store, Offsite(cfg, store, str(state)), state, root


def _publish(store, root, when: datetime):
    sources = bench_backup(root / "bench" / when.strftime("%Y%m%d%H%M%S"), dump_rows=50)
    return store.publish(STACK, SITE, sources, created=when)["id"]


def _join(state, name: str) -> None:
    # What `fm-agent fleet join` leaves in the state dir (fleet_cli.py); the offsite host follows it.
    (state / "fleet.json").write_text(json.dumps({"server": name, "tokens": []}))


def _hosts_in_repository(repo, password_file) -> dict[str, list[str]]:
    env = {"RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD_FILE": password_file, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["restic", "snapshots", "--json", "--no-lock"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    hosts: dict[str, list[str]] = {}
    for snap in json.loads(out.stdout):
        backup = next(t.split("=", 1)[1] for t in snap["tags"] if t.startswith("backup="))
        hosts.setdefault(snap["hostname"], []).append(backup)
    return {host: sorted(ids) for host, ids in hosts.items()}


def test_two_servers_sharing_a_repository_never_prune_or_restore_each_others_copies(tmp_path):
    repo = tmp_path / "repo"
    password_file = private_file(tmp_path / "pw", PASSWORD + "\n")
    now = datetime.now(timezone.utc).replace(microsecond=0)
    b_store, b_offsite, b_state, b_root = _server(tmp_path, "erp-b", repo, password_file)
    c_store, c_offsite, c_state, c_root = _server(tmp_path, "erp-c", repo, password_file)

    # erp-b copies one backup before it joins the fleet: under today's host.
    legacy = _publish(b_store, b_root, now - timedelta(days=5, minutes=1))
    assert b_offsite.host() == "fmappliance"
    b_offsite.copy_site(Ctx(), STACK, SITE)
    _join(b_state, "erp-b")
    _join(c_state, "erp-c")
    assert (b_offsite.host(), c_offsite.host()) == ("erp-b", "erp-c")
    # Joined, erp-b lists only its fleet host's copies: the old one is not its to prune any more.
    assert b_offsite.snapshots(STACK, SITE, refresh=True) == []

    # Both servers back up prod/site1 on the same four days (a minute apart) and copy them.
    b_ids = [_publish(b_store, b_root, now - timedelta(days=d, minutes=2)) for d in (3, 2, 1, 0)]
    c_ids = [_publish(c_store, c_root, now - timedelta(days=d, minutes=3)) for d in (3, 2, 1, 0)]
    b_offsite.copy_site(Ctx(), STACK, SITE)
    c_offsite.copy_site(Ctx(), STACK, SITE)

    # Retention (daily: 2) ran on each server: each keeps its own two newest; nothing of the other went.
    assert [s["backup"] for s in b_offsite.snapshots(STACK, SITE, refresh=True)] == [b_ids[3], b_ids[2]]
    assert [s["backup"] for s in c_offsite.snapshots(STACK, SITE, refresh=True)] == [c_ids[3], c_ids[2]]
    assert _hosts_in_repository(repo, password_file) == {
        "fmappliance": [legacy],
        "erp-b": sorted([b_ids[3], b_ids[2]]),
        "erp-c": sorted([c_ids[3], c_ids[2]]),
    }

    # A restore on erp-c finds its own copy, and not erp-b's (same stack, same site).
    folder, manifest = c_offsite.restore_into(STACK, SITE, c_ids[3], str(tmp_path / "restored-c"))
    assert manifest["id"] == c_ids[3]
    with pytest.raises(OffsiteFailed) as foreign:
        c_offsite.restore_into(STACK, SITE, b_ids[3], str(tmp_path / "restored-foreign"))
    assert str(foreign.value) == f"There is no offsite copy of backup {b_ids[3]} of {SITE} on {STACK}."
    assert c_offsite.manifest_of(STACK, SITE, b_ids[3]) is None

    # offsite.host set by hand wins (e.g. to reach the copies made before joining).
    b_offsite.cfg["host"] = "fmappliance"
    assert [s["backup"] for s in b_offsite.snapshots(STACK, SITE, refresh=True)] == [legacy]
