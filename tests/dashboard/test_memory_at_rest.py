"""What the dashboard holds at rest: the serving app is built without loading what only a sign-in,
a second factor, a notification, a schedule, a fleet or a page render needs (RSS goal: under 30 MB,
tests/benchmarks/bench_startup.py).  Runs in a fresh interpreter, so other tests' imports don't count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.config_factory import write_config

pytestmark = pytest.mark.slow  # a fresh interpreter

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.services import build_services

config = load_config(sys.argv[1], offsite_credentials=False)
services = build_services(config)
make_app(config, services=services)
at_rest = {"modules": sorted(sys.modules), "compiled": sorted(services.templates._compiled)}
services.templates.render("login", login_csrf="t", next_path="/", username="")
print(json.dumps({**at_rest, "after_login_page": sorted(services.templates._compiled)}))
"""

# Each loads with the first use that needs it (the modules' comments say which).
NOT_AT_REST = (
    "bcrypt",  # first sign-in
    "pyotp",  # second factor
    "segno",  # second-factor enrolment
    "smtplib",  # first e-mail notification
    "urllib.request",  # first webhook
    "zoneinfo",  # first schedule with a time zone
    "sysconfig",
    "argparse",  # command lines other than --config
    "fmappliance.dashboard.hub",  # only where fleet.listen is set
    "fmappliance.dashboard.fleet_client",
    "fmappliance.fleet.certs",
)


def test_the_app_is_built_without_what_only_later_requests_need(tmp_path):
    config = write_config(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    state = json.loads(out.stdout.strip().splitlines()[-1])
    loaded = set(state["modules"])
    assert [name for name in NOT_AT_REST if name in loaded] == []
    assert state["compiled"] == []  # templates compile at their first render
    assert "login" in state["after_login_page"]
    assert "dashboard" not in state["after_login_page"]
