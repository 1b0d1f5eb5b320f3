"""Failed restores, restore tests, updates and offsite jobs are notified once, whoever started
them: the watcher polls the (fake) agent over HTTP and sends through a real Notifier to a
local webhook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_agent import FakeAgent
from support.config_factory import write_config
from support.polling import wait_for

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.job_watch import EVENT_OF_ACTION, SHORT_LIST, build_failed_job_watcher
from fmappliance.dashboard.notifications import Notifier
from fmappliance.dashboard.state_db import StateDB

ROOT = Path(__file__).resolve().parents[2]
SITE = "site1.example.com"
ALL_EVENTS = ["backup_failed", *EVENT_OF_ACTION.values()]


@pytest.fixture
def notifier(webhook):
    notifier = Notifier({"webhook_url": webhook.url, "events": ALL_EVENTS})
    yield notifier
    notifier.close()


@pytest.fixture
def make_watcher(config, fake_agent, notifier):
    def make(state_dir=None, **kw):
        agent = AgentClient(fake_agent.url, fake_agent.token, 5)
        db = StateDB(state_dir or config["dashboard"]["state_dir"])
        return build_failed_job_watcher(config, agent, db, notifier=notifier, **kw)

    return make


def sent(notifier, webhook) -> list[dict]:
    assert notifier.flush(10)
    return list(webhook.received)


def test_a_failure_before_the_start_is_not_notified_and_a_new_one_is_notified_once(
    make_watcher, fake_agent, notifier, webhook
):
    fake_agent.add_job("restore_site", "prod", SITE, "failed", "old failure")
    watcher = make_watcher()
    assert watcher.poll() == 0  # the baseline
    # A restore started by a direct agent API call (not through the dashboard) fails.
    job = fake_agent.add_job(
        "restore_site", "prod", SITE, "failed", "Restore failed; rolled back to 2026-11-30_05-00-00."
    )
    assert watcher.poll() == 1
    assert watcher.poll() == 0
    [payload] = sent(notifier, webhook)
    assert payload["event"] == "restore_failed"
    assert payload["subject"] == f"Restore of {SITE} on prod failed"
    assert payload["details"]["job_id"] == job["id"]
    assert payload["details"]["message"] == "Restore failed; rolled back to 2026-11-30_05-00-00."


@pytest.mark.parametrize("action,event", sorted(EVENT_OF_ACTION.items()))
def test_each_watched_action_maps_to_its_event(make_watcher, fake_agent, notifier, webhook, action, event):
    watcher = make_watcher()
    watcher.poll()
    fake_agent.add_job(action, "prod", SITE if action in ("restore_site", "test_restore") else None, "failed")
    assert watcher.poll() == 1
    assert [p["event"] for p in sent(notifier, webhook)] == [event]


def test_successes_and_other_actions_are_not_notified(make_watcher, fake_agent, notifier, webhook):
    watcher = make_watcher()
    watcher.poll()
    fake_agent.add_job("restore_site", "prod", SITE, "succeeded")
    fake_agent.add_job("backup_site", "prod", SITE, "failed")  # the scheduler notifies its own backups
    fake_agent.add_job("restart_stack", "prod", None, "failed")
    assert watcher.poll() == 0
    assert sent(notifier, webhook) == []


def test_a_job_running_at_the_start_is_watched_and_notified_when_it_fails(make_watcher, fake_agent, notifier, webhook):
    running = fake_agent.add_job("update_stack", "prod", None, "running")
    watcher = make_watcher()
    watcher.poll()
    fake_agent.finish_job(running["id"], "failed", "bench update failed; rolled back.")
    assert watcher.poll() == 1
    assert [p["details"]["job_id"] for p in sent(notifier, webhook)] == [running["id"]]


def test_a_restart_does_not_notify_again(make_watcher, fake_agent, notifier, webhook, config):
    watcher = make_watcher()
    watcher.poll()
    fake_agent.add_job("restore_site", "prod", SITE, "failed")
    assert watcher.poll() == 1
    again = make_watcher()  # a new dashboard process on the same state
    again.poll()
    assert again.poll() == 0
    assert len(sent(notifier, webhook)) == 1


def test_two_checks_seeing_the_same_failure_notify_once(make_watcher, fake_agent, notifier, webhook):
    first, second = make_watcher(), make_watcher()
    first.poll(), second.poll()
    fake_agent.add_job("restore_site", "prod", SITE, "failed")
    assert first.poll() + second.poll() == 1
    assert len(sent(notifier, webhook)) == 1


def test_a_long_running_job_pushed_out_of_the_list_is_asked_for_by_id(make_watcher, fake_agent, notifier, webhook):
    watcher = make_watcher()
    watcher.poll()
    restore = fake_agent.add_job("restore_site", "prod", SITE, "running")
    watcher.poll()
    for _ in range(SHORT_LIST + 5):  # a burst of backups queues behind the restore
        fake_agent.add_job("backup_site", "prod", SITE, "succeeded")
    watcher.poll()
    fake_agent.finish_job(restore["id"], "failed", "migrate failed; rolled back.")
    assert watcher.poll() == 1
    assert [p["details"]["job_id"] for p in sent(notifier, webhook)] == [restore["id"]]
    assert ("GET", f"/jobs/{restore['id']}", None) in fake_agent.requests


def test_a_burst_of_jobs_between_two_polls_does_not_hide_a_failure(make_watcher, fake_agent, notifier, webhook):
    watcher = make_watcher()
    watcher.poll()
    failed = fake_agent.add_job("restore_site", "prod", SITE, "failed")
    for _ in range(SHORT_LIST + 5):
        fake_agent.add_job("backup_site", "prod", SITE, "succeeded")
    assert watcher.poll() == 1
    assert [p["details"]["job_id"] for p in sent(notifier, webhook)] == [failed["id"]]


def test_nothing_is_notified_before_the_agent_answered_once(make_watcher, fake_agent, notifier, webhook):
    fake_agent.add_job("restore_site", "prod", SITE, "failed")
    fake_agent.fail_status = 502
    watcher = make_watcher()
    assert watcher.poll() == 0
    fake_agent.fail_status = None
    assert watcher.poll() == 0  # the baseline: that failure is older than this dashboard
    assert watcher.poll() == 0
    assert sent(notifier, webhook) == []


def test_the_thread_polls_by_itself(make_watcher, fake_agent, webhook):
    watcher = make_watcher(poll_seconds=0.05)
    watcher.start()
    try:
        wait_for(lambda: ("GET", "/jobs?limit=25", None) in fake_agent.requests, 10, "the first poll")
        fake_agent.add_job("offsite_check", "prod", None, "failed", "restic check found damaged packs")
        wait_for(lambda: webhook.received, 10, "the offsite_check_failed notification")
    finally:
        watcher.stop()
    assert webhook.received[0]["event"] == "offsite_check_failed"


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_the_dashboard_process_notifies_a_failed_update_started_elsewhere(tmp_path, webhook):
    agent = FakeAgent().start()
    old = agent.add_job("update_stack", "prod", None, "failed", "an old failure")
    path = write_config(
        tmp_path,
        dashboard={"agent_url": agent.url},
        notifications={"webhook_url": webhook.url, "events": ["update_failed"]},
    )
    log = tmp_path / "dashboard.log"
    err = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(path)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=err,
    )
    try:
        # The baseline is taken once the agent's answer was read, which the log says.
        wait_for(lambda: b"Watching the agent's jobs" in log.read_bytes(), 20, "the dashboard's first look at the jobs")
        # Started by the scheduler, an API client, anyone: the dashboard notifies it all the same.
        new = agent.add_job(
            "update_stack", "prod", None, "failed", "bench update failed; rolled back to the old images."
        )
        wait_for(lambda: webhook.received, 30, "the update_failed notification")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err.close()
        agent.stop()
    assert [(p["event"], p["details"]["job_id"]) for p in webhook.received] == [("update_failed", new["id"])]
    assert old["id"] != new["id"]
