"""The schedule service wired into the dashboard: the real ``python -m fmappliance.dashboard``
process hands its schedules to the agent at start (the upgrade: ``handled_through`` from the old
engine's state) and starts no job itself; the service built over the agent client marks
schedules of vanished stacks broken."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bottle
import pytest
from fake_agent import FakeAgent
from support.config_factory import TEST_TOKEN, write_config
from support.polling import wait_for

from fmappliance.config import load_config
from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.schedules import validate_schedule
from fmappliance.dashboard.services import build_scheduler
from fmappliance.wire import format_timestamp

ROOT = Path(__file__).resolve().parents[2]


class AgentWithSites(FakeAgent):
    """The fake agent plus ``GET /stacks/{name}/sites`` (404 for an unknown stack), as the real agent has."""

    def _build(self):
        app = super()._build()

        @app.get("/stacks/<name>/sites")
        def sites(name):
            stack = self.stack(name)
            if stack is None:
                return bottle.HTTPResponse(
                    json.dumps({"success": False, "message": f"Unknown stack {name!r}."}),
                    status=404,
                    headers={"Content-Type": "application/json"},
                )
            return bottle.HTTPResponse(
                json.dumps({"sites": stack["sites"]}), headers={"Content-Type": "application/json"}
            )

        return app


@pytest.fixture
def agent():
    agent = AgentWithSites().start()
    yield agent
    agent.stop()


def backup_posts(agent) -> list:
    return [
        body
        for method, path, body in list(agent.requests)
        if method == "POST" and path == "/action" and isinstance(body, dict) and body.get("action") == "backup_site"
    ]


def add_schedule(store, **fields):
    clean, errors = validate_schedule(fields, known_stacks=None, default_tz="UTC")
    assert errors == {}
    return store.add(clean, "admin")


def schedule_puts(agent) -> list:
    return [body for method, path, body in list(agent.requests) if method == "PUT" and path == "/schedules"]


def run_dashboard(path):
    return subprocess.Popen(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop_dashboard(proc) -> int:
    try:
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_the_upgraded_dashboard_hands_its_schedules_to_the_agent_and_starts_no_job_itself(tmp_path, agent):
    path = write_config(
        tmp_path,
        dashboard={"agent_url": agent.url},
        scheduler={"catchup_hours": 4},
        schedules=[{"stack": "erp", "frequency": "daily", "time": "03:00", "timezone": "UTC"}],
    )
    config = load_config(path)
    now = datetime.now(timezone.utc)
    # The old release's state DB: a UI schedule whose daily time passed five minutes ago while
    # the dashboard was down; its old engine last handled the due time a day before.
    store = ScheduleStore(config["dashboard"]["state_dir"], default_tz="UTC", clock=lambda: now - timedelta(days=2))
    schedule = add_schedule(
        store,
        stack="prod",
        site="site1.example.com",
        frequency="daily",
        time=(now - timedelta(minutes=5)).strftime("%H:%M"),
        timezone="UTC",
    )
    handled = (now - timedelta(days=1, minutes=5)).replace(second=0, microsecond=0)
    store.set_last_due(schedule["id"], handled)

    proc = run_dashboard(path)
    try:
        [pushed] = wait_for(lambda: schedule_puts(agent), 20, "the dashboard to PUT /schedules")
    finally:
        assert stop_dashboard(proc) == 0
    assert pushed["version"] == 1 and pushed["catchup_hours"] == 4
    by_stack = {entry["stack"]: entry for entry in pushed["schedules"]}
    assert set(by_stack) == {"prod", "erp"}
    ui = by_stack["prod"]
    assert ui["id"] == schedule["id"] and ui["handled_through"] == format_timestamp(handled)
    assert {k: ui[k] for k in ("kind", "site", "frequency", "enabled")} == {
        "kind": "backup",
        "site": "site1.example.com",
        "frequency": "daily",
        "enabled": True,
    }
    # The agent runs the schedule (it catches the due time up); the dashboard started nothing.
    assert backup_posts(agent) == []

    # The next start pushes the same set under the same version (a no-op for the agent), and
    # the hand-over happened once: no handled_through any more.
    proc = run_dashboard(path)
    try:
        wait_for(lambda: len(schedule_puts(agent)) == 2, 20, "the dashboard to push at start")
    finally:
        assert stop_dashboard(proc) == 0
    again = schedule_puts(agent)[1]
    assert again["version"] == 1 and all("handled_through" not in e for e in again["schedules"])
    assert agent.schedule_pushes == 1


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_a_schedule_whose_stack_the_agent_no_longer_knows_is_marked_broken(tmp_path, agent):
    config = load_config(write_config(tmp_path, dashboard={"agent_url": agent.url}))
    engine = build_scheduler(config, AgentClient(agent.url, TEST_TOKEN, 5))
    schedule = add_schedule(engine.store, stack="gone", site="*", frequency="daily", time="02:00", timezone="UTC")
    kept = add_schedule(
        engine.store, stack="erp", site="erp.example.com", frequency="daily", time="02:00", timezone="UTC"
    )
    engine.check_health()
    assert engine.drain(10)
    status = {item["id"]: item for item in engine.status()}
    assert status[schedule["id"]]["status"] == "broken"
    assert "no longer exists" in status[schedule["id"]]["broken_reason"]
    assert status[kept["id"]]["status"] == "ok"
    engine.stop()
