"""A job page that shows a scheduled backup ending tells the schedule service at once: a failed
scheduled backup that the dashboard's old engine handed to the agent before an upgrade reaches
the webhook as ``backup_failed`` when the operator (or a polling job panel) sees it, not only
at the next poll; exactly once, whatever is viewed after.  (Runs the agent starts itself are
notified from its outcome records: test_schedule_sync.py.)"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from support.config_factory import TEST_TOKEN, write_config
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.notifications import Notifier
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.scheduler import ScheduleService
from fmappliance.dashboard.schedules import validate_schedule

SITE = "site2.example.com"
BEFORE_DUE = datetime(2026, 11, 25, 1, 0, tzinfo=timezone.utc)
JUST_DUE = datetime(2026, 11, 25, 2, 0, 5, tzinfo=timezone.utc)


class World:
    """The dashboard app over the fake agent with an engine that never polls job outcomes
    itself (no ``get_job``), so only the job page can report them."""

    def __init__(self, tmp_path, fake_agent, webhook):
        config = load_config(
            write_config(
                tmp_path,
                dashboard={"agent_url": fake_agent.url},
                notifications={"webhook_url": webhook.url, "events": ["backup_failed"]},
            )
        )
        self.now = BEFORE_DUE
        agent = AgentClient(fake_agent.url, TEST_TOKEN, 5)
        self.store = ScheduleStore(config["dashboard"]["state_dir"], default_tz="UTC", clock=lambda: self.now)
        self.notifier = Notifier(config["notifications"])
        self.agent = agent
        self.engine = ScheduleService(
            self.store,
            None,
            list_sites=lambda stack: fake_agent.stack(stack)["sites"],
            notifier=self.notifier,
            clock=lambda: self.now,
        )
        self.app = make_app(config, scheduler=self.engine)
        self.client = WSGIClient(self.app)
        assert self.client.login().status == 303

    def run_scheduled_backup(self) -> dict:
        """A daily 02:00 schedule came due and the old engine handed it to the agent (the run
        row it left in the state DB); returns the run (with the agent's job id)."""
        clean, errors = validate_schedule(
            {"stack": "prod", "site": SITE, "frequency": "daily", "time": "02:00", "timezone": "UTC"},
            known_stacks=None,
            default_tz="UTC",
        )
        assert errors == {}
        schedule = self.store.add(clean, "admin")
        self.now = JUST_DUE
        job = self.agent.action("backup_site", "prod", SITE, label="scheduled")["job"]
        due = JUST_DUE.replace(second=0)
        self.store.record_run(schedule["id"], due, self.now, job["id"], "submitted", "Handed to the agent.")
        run = self.store.last_run(schedule["id"])
        assert run["result"] == "submitted" and run["job_id"]
        return run

    def failures(self, webhook) -> list[dict]:
        assert self.notifier.flush(10)
        return [n for n in webhook.received if n["event"] == "backup_failed"]

    def close(self):
        self.engine.stop()
        self.notifier.close()


@pytest.fixture
def world(tmp_path, fake_agent, webhook):
    world = World(tmp_path, fake_agent, webhook)
    yield world
    world.close()


def test_a_failed_scheduled_backup_seen_on_its_job_panel_is_notified_once(world, fake_agent, webhook):
    fake_agent.job_outcome = "failed"
    run = world.run_scheduled_backup()
    job_id = run["job_id"]
    panel = {"HX-Request": "true"}

    # The fake agent's job goes queued -> running -> failed on successive GET /jobs/<id>.
    assert 'data-status="running"' in world.client.get(f"/jobs/{job_id}", headers=panel).text
    assert world.failures(webhook) == []
    assert 'data-status="failed"' in world.client.get(f"/jobs/{job_id}", headers=panel).text
    [note] = world.failures(webhook)
    assert note["details"]["job_id"] == job_id
    assert (note["details"]["stack"], note["details"]["site"]) == ("prod", SITE)
    assert note["details"]["message"] == "bench backup failed: exit code 1"
    assert world.store.last_run(run["schedule_id"])["job_status"] == "failed"

    # Viewing the ended job again, as a page or as JSON, sends nothing more.
    assert world.client.get(f"/jobs/{job_id}").status == 200
    assert world.client.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).json()["status"] == "failed"
    assert len(world.failures(webhook)) == 1


def test_a_failed_scheduled_backup_seen_as_json_is_notified(world, fake_agent, webhook):
    fake_agent.job_outcome = "failed"
    job_id = world.run_scheduled_backup()["job_id"]
    statuses = [
        world.client.get(f"/jobs/{job_id}", headers={"Accept": "application/json"}).json()["status"] for _ in range(2)
    ]
    assert statuses == ["running", "failed"]
    assert [n["details"]["job_id"] for n in world.failures(webhook)] == [job_id]


def test_a_succeeded_scheduled_backup_is_recorded_without_a_notification(world, fake_agent, webhook):
    run = world.run_scheduled_backup()
    for _ in range(2):
        world.client.get(f"/jobs/{run['job_id']}")
    assert world.store.last_run(run["schedule_id"])["job_status"] == "succeeded"
    assert world.failures(webhook) == []


def test_a_failed_manual_job_is_no_scheduled_backup_failure(world, fake_agent, webhook):
    fake_agent.job_outcome = "failed"
    job_id = AgentClient(fake_agent.url, TEST_TOKEN, 5).action("backup_site", "prod", SITE)["job"]["id"]
    for _ in range(2):
        world.client.get(f"/jobs/{job_id}")
    assert world.failures(webhook) == []


def test_a_scheduler_that_cannot_record_the_outcome_does_not_break_the_job_page(world, fake_agent, monkeypatch):
    fake_agent.job_outcome = "failed"
    job_id = world.run_scheduled_backup()["job_id"]

    def broken(job):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(world.engine, "note_job", broken)
    world.client.get(f"/jobs/{job_id}")
    page = world.client.get(f"/jobs/{job_id}")
    assert page.status == 200
    assert 'data-status="failed"' in page.text and "database is locked" not in page.text
