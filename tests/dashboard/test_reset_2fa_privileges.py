"""``fm-dashboard reset-2fa`` run as root switches to the state dir's owner and keeps none of
root's supplementary groups (issue 21, "Also")."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.config_factory import TEST_USER, write_config

from fmappliance.dashboard.state_db import StateDB

ROOT = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")
EXTRA_GROUP = 4242  # a supplementary group root has when it starts the command

SPY = """
import os, sys
import fmappliance.dashboard.state_db as state_db
original = state_db.StateDB.__init__
def spy(self, *args, **kwargs):
    print("identity", os.getuid(), os.getgid(), sorted(os.getgroups()), flush=True)
    return original(self, *args, **kwargs)
state_db.StateDB.__init__ = spy
from fmappliance.dashboard.__main__ import main
sys.exit(main(["--config", sys.argv[1], "reset-2fa", sys.argv[2]]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it is about dropping root's rights")
def test_reset_2fa_as_root_drops_roots_supplementary_groups(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="fm-reset-2fa-", dir="/tmp"))
    try:
        state.chmod(0o755)
        StateDB(str(state))
        for path in [state, *state.iterdir()]:
            os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
        config = write_config(tmp_path, dashboard={"state_dir": str(state)})
        proc = subprocess.run(
            [sys.executable, "-c", SPY, str(config), TEST_USER],
            capture_output=True,
            text=True,
            timeout=60,
            extra_groups=[0, EXTRA_GROUP],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        line = next(x for x in proc.stdout.splitlines() if x.startswith("identity"))
        assert line == f"identity {NOBODY.pw_uid} {NOBODY.pw_gid} []", proc.stdout + proc.stderr
    finally:
        shutil.rmtree(state, ignore_errors=True)
