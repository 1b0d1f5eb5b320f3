"""The scheduler wired into the dashboard: the real ``python -m fmappliance.dashboard`` process
hands a due backup to the agent by itself, and the engine built over the agent client follows
job outcomes to a webhook notification and marks schedules of vanished stacks broken."""

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


def test_the_dashboard_process_catches_up_a_missed_backup_at_start_and_stops_cleanly(tmp_path, agent):
    path = write_config(
        tmp_path,
        dashboard={"agent_url": agent.url},
        schedules=[{"stack": "erp", "frequency": "daily", "time": "03:00", "timezone": "UTC"}],
    )
    config = load_config(path)
    now = datetime.now(timezone.utc)
    # A schedule added an hour ago whose daily time passed five minutes ago, while the
    # dashboard was down: the start-up check must catch it up now, not wait a day.
    store = ScheduleStore(config["dashboard"]["state_dir"], default_tz="UTC", clock=lambda: now - timedelta(hours=1))
    schedule = add_schedule(
        store,
        stack="prod",
        site="site1.example.com",
        frequency="daily",
        time=(now - timedelta(minutes=5)).strftime("%H:%M"),
        timezone="UTC",
    )

    proc = subprocess.Popen(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        [posted] = wait_for(lambda: backup_posts(agent), 20, "the dashboard to POST /action backup_site")
        assert posted == {"action": "backup_site", "stack": "prod", "site": "site1.example.com", "label": "scheduled"}
        run = wait_for(
            lambda: (store.last_run(schedule["id"]) or {}).get("job_id") and store.last_run(schedule["id"]),
            10,
            "the run to record the agent's job",
        )
        assert run["result"] == "submitted" and run["job_id"] in agent.jobs and run["catch_up"] is True
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    # The config-declared schedule (not due) caused no backup, and nothing ran twice.
    assert len(backup_posts(agent)) == 1


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_a_failed_scheduled_backup_job_is_followed_to_a_backup_failed_notification(tmp_path, agent, webhook):
    agent.job_outcome = "failed"
    config = load_config(
        write_config(
            tmp_path,
            dashboard={"agent_url": agent.url},
            notifications={"webhook_url": webhook.url, "events": ["backup_failed"]},
        )
    )
    clock = Clock(datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc))
    engine = build_scheduler(config, AgentClient(agent.url, TEST_TOKEN, 5), clock=clock)
    schedule = add_schedule(
        engine.store, stack="prod", site="site2.example.com", frequency="daily", time="02:00", timezone="UTC"
    )
    engine.reload()
    clock.now = datetime(2026, 11, 25, 2, 0, 5, tzinfo=timezone.utc)
    assert engine.check_due(clock.now) == [schedule["id"]]
    assert engine.drain(10)
    assert backup_posts(agent) == [
        {"action": "backup_site", "stack": "prod", "site": "site2.example.com", "label": "scheduled"}
    ]
    # The fake agent's job moves queued -> running -> failed on successive GET /jobs/<id>.
    for _ in range(3):
        engine.poll_jobs()
        assert engine.drain(10)
    assert webhook.arrived.wait(10)
    [note] = webhook.received
    assert note["event"] == "backup_failed"
    assert note["details"]["site"] == "site2.example.com" and note["details"]["job_id"] in agent.jobs
    assert engine.store.last_run(schedule["id"])["job_status"] == "failed"
    engine.stop()


def test_a_schedule_whose_stack_the_agent_no_longer_knows_is_marked_broken(tmp_path, agent):
    config = load_config(write_config(tmp_path, dashboard={"agent_url": agent.url}))
    engine = build_scheduler(config, AgentClient(agent.url, TEST_TOKEN, 5))
    schedule = add_schedule(engine.store, stack="gone", site="*", frequency="daily", time="02:00", timezone="UTC")
    kept = add_schedule(
        engine.store, stack="erp", site="erp.example.com", frequency="daily", time="02:00", timezone="UTC"
    )
    engine.reload()
    engine.check_health()
    assert engine.drain(10)
    status = {item["id"]: item for item in engine.status()}
    assert status[schedule["id"]]["status"] == "broken"
    assert "no longer exists" in status[schedule["id"]]["broken_reason"]
    assert status[kept["id"]]["status"] == "ok"
    engine.stop()
