"""Offsite copies through the agent app: a backup queues a copy job, the listing and /stacks show it."""

from __future__ import annotations

import json
import shutil

import pytest
from support.wsgi import wait_job

SITE = "site1.example.com"
PASSWORD = "offsite-app-pass-9QvL2"
SECRET_KEY = "s3-secret-key-Xk29fj3Lq0"
pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed")


@pytest.fixture
def offsite_world(world, tmp_path):
    pw = tmp_path / "offsite.password"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    env = tmp_path / "offsite.env"
    env.write_text(f"AWS_ACCESS_KEY_ID=AKIDLOCALTEST\nAWS_SECRET_ACCESS_KEY={SECRET_KEY}\n")
    env.chmod(0o600)
    # a restic that records its argv and environment names before running the real one
    wrapper = tmp_path / "restic-logged"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >> {tmp_path}/restic-argv.log\nexec {shutil.which("restic")} "$@"\n'
    )
    wrapper.chmod(0o755)
    world.write_config(
        offsite={
            "restic_binary": str(wrapper),
            "repository": str(tmp_path / "offsite-repo"),
            "password_file": str(pw),
            "env_file": str(env),
            "retention": {"daily": 7},
        }
    )
    return world


def test_backup_queues_an_offsite_copy_that_the_listing_and_stacks_show(offsite_world, make_client, caplog):
    caplog.set_level("DEBUG")
    client = make_client()
    res = client.post_action("backup_site", "prod", SITE)
    backup_job = wait_job(client, res.json()["job"]["id"], timeout=60)
    assert backup_job["status"] == "succeeded", backup_job
    backup_id = backup_job["result"]["backup"]["id"]
    copies = [j for j in client.services.jobs.list(stack="prod") if j["action"] == "offsite_copy"]
    assert len(copies) == 1 and copies[0]["site"] == SITE
    copy = wait_job(client, copies[0]["id"], timeout=120)
    assert copy["status"] == "succeeded", copy
    assert "initialised it (restic init)" in copy["output"] and "bytes sent" in copy["output"]
    listing = client.get(f"/offsite/prod/{SITE}").json()
    assert [s["backup"] for s in listing["snapshots"]] == [backup_id]
    assert {f["name"] for f in listing["snapshots"][0]["files"]} == {
        f["name"] for f in backup_job["result"]["backup"]["files"]
    }
    stack = next(s for s in client.get("/stacks").json()["stacks"] if s["name"] == "prod")
    assert stack["last_offsite"][SITE]["backup"] == backup_id
    assert stack["offsite_lag"][SITE] == 0
    # the whole job record and the doubles' argv log never hold a credential
    text = json.dumps(client.services.jobs.list(limit=500)) + json.dumps(copy)
    argv_log = offsite_world.root / "restic-argv.log"
    logged = argv_log.read_text()
    assert "--tag" in logged and f"site={SITE}" in logged  # the wrapper did see restic's argv
    text += logged + caplog.text
    assert PASSWORD not in text and SECRET_KEY not in text


def test_offsite_check_takes_no_stack_and_runs(offsite_world, make_client):
    client = make_client()
    assert client.post_json("/action", {"action": "offsite_check", "stack": "prod"}).status == 400
    res = client.post_json("/action", {"action": "offsite_check"})
    assert res.status == 202, res.json()
    job = wait_job(client, res.json()["job"]["id"], timeout=60)
    # an empty, never-initialised repository: the check fails with a sentence, not restic's raw output
    assert job["status"] == "failed"
    assert "offsite" in job["message"].lower()


def test_offsite_actions_are_refused_without_an_offsite_section(client):
    res = client.post_json("/action", {"action": "offsite_check"})
    # the world allows every action, so the refusal is for the missing section, with its sentence
    assert res.status == 409, res.json()
    assert res.json()["message"] == "Offsite copies are not configured on this server (no offsite.repository)."


def test_the_timer_queues_a_catch_up_copy_per_site_and_a_weekly_check(offsite_world, make_client):
    client = make_client()
    res = client.post_action("backup_site", "prod", SITE)
    wait_job(client, res.json()["job"]["id"], timeout=60)
    for job in client.services.jobs.list(limit=50):
        if job["status"] in ("queued", "running"):
            wait_job(client, job["id"], timeout=120)
    timer = client.services.offsite_timer
    queued = timer.tick(now=1_000_000_000.0)
    assert sorted((j["action"], j["site"]) for j in queued) == [("offsite_check", None), ("offsite_copy", SITE)]
    for job in queued:
        wait_job(client, job["id"], timeout=120)
    # within the week no second check; the catch-up copy comes every round
    again = timer.tick(now=1_000_000_000.0 + 3600)
    assert [j["action"] for j in again] == ["offsite_copy"]
    wait_job(client, again[0]["id"], timeout=120)
    check = client.services.jobs.get(queued[0]["id"] if queued[0]["action"] == "offsite_check" else queued[1]["id"])
    assert check["status"] == "succeeded", check["output"]


def test_a_failing_copy_fails_its_own_job_never_the_backup(offsite_world, make_client, tmp_path):
    offsite_world.config["offsite"]["repository"] = "rest:http://127.0.0.1:9/down"
    client = make_client()
    res = client.post_action("backup_site", "prod", SITE)
    backup_job = wait_job(client, res.json()["job"]["id"], timeout=60)
    assert backup_job["status"] == "succeeded"
    copy = next(j for j in client.services.jobs.list(stack="prod") if j["action"] == "offsite_copy")
    copy = wait_job(client, copy["id"], timeout=120)
    assert copy["status"] == "failed"
    assert "could not be reached" in copy["message"]
    assert offsite_world.published("prod", SITE)  # the local backup is intact


def test_allowed_actions_govern_requests_only_the_agent_copies_after_each_backup_and_catches_up(
    offsite_world, make_client
):
    # An explicit allow-list without offsite_copy: requests for it are refused, the agent's own copies run.
    offsite_world.config["security"]["allowed_actions"] = ["backup_site", "restart_stack"]
    client = make_client()
    refused = client.post_action("offsite_copy", "prod", SITE)
    assert refused.status == 403 and "security.allowed_actions" in refused.json()["message"]
    res = client.post_action("backup_site", "prod", SITE)
    backup_job = wait_job(client, res.json()["job"]["id"], timeout=60)
    assert backup_job["status"] == "succeeded", backup_job
    copies = [j for j in client.services.jobs.list(stack="prod") if j["action"] == "offsite_copy"]
    assert len(copies) == 1, "the copy after the backup was not queued"
    copy = wait_job(client, copies[0]["id"], timeout=120)
    assert copy["status"] == "succeeded", copy
    listing = client.get(f"/offsite/prod/{SITE}").json()
    assert [s["backup"] for s in listing["snapshots"]] == [backup_job["result"]["backup"]["id"]]
    queued = client.services.offsite_timer.tick(now=1_000_000_000.0)
    assert ("offsite_copy", SITE) in [(j["action"], j["site"]) for j in queued]
    for job in queued:
        assert wait_job(client, job["id"], timeout=120)["status"] == "succeeded"


# ------------------------------------------------ listing for pages (issue 21.10): bounded work per request


@pytest.fixture
def listing_world(offsite_world, tmp_path):
    """The offsite world with a restic whose `snapshots` can be made slow or failing (restic-mode file)."""
    mode = tmp_path / "restic-mode"
    mode.write_text("")
    wrapper = tmp_path / "restic-controlled"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" >> {tmp_path}/restic-argv.log\n'
        'if [ "$1" = snapshots ]; then\n'
        f'  case "$(cat {mode})" in\n'
        "    slow) sleep 2 ;;\n"
        '    fail) echo "Fatal: wrong password or no key found" >&2; exit 1 ;;\n'
        "  esac\n"
        "fi\n"
        f'exec {shutil.which("restic")} "$@"\n'
    )
    wrapper.chmod(0o755)
    offsite = dict(offsite_world.config["offsite"], restic_binary=str(wrapper))
    offsite_world.write_config(
        offsite={k: offsite[k] for k in ("restic_binary", "repository", "password_file", "env_file")}
    )
    offsite_world.mode = mode
    offsite_world.argv_log = tmp_path / "restic-argv.log"
    return offsite_world


def snapshot_calls(world) -> int:
    if not world.argv_log.exists():
        return 0
    return world.argv_log.read_text().splitlines().count("snapshots")


def test_an_unknown_site_is_404_without_running_restic(listing_world, make_client):
    client = make_client()
    for i in range(20):
        answer = client.get(f"/offsite/prod/made-up-{i}.example.com")
        assert answer.status == 404 and "no site named" in answer.json()["message"]
    assert snapshot_calls(listing_world) == 0


def test_the_listing_is_read_once_per_stack_for_all_its_sites(listing_world, make_client):
    client = make_client()
    for _ in range(3):
        for site in ("site1.example.com", "site2.example.com"):
            answer = client.get(f"/offsite/prod/{site}")
            assert answer.status == 200 and answer.json() == {"snapshots": []}
    assert snapshot_calls(listing_world) == 1


def test_a_slow_listing_is_read_once_off_the_request_threads_and_pages_hear_try_again(
    listing_world, make_client, monkeypatch
):
    import threading
    import time

    from fmappliance.agent import offsite

    monkeypatch.setattr(offsite, "LISTING_WAIT_SECONDS", 0.3)
    listing_world.mode.write_text("slow")
    client = make_client()
    answers = []

    def ask():
        answers.append(client.get("/offsite/prod/site1.example.com"))

    started = time.monotonic()
    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started < 1.5  # nobody waited for the 2 s listing
    assert {a.status for a in answers} == {503}
    assert all(int(a.header("Retry-After")) > 0 and "still being listed" in a.json()["message"] for a in answers)
    # The one listing in flight lands; pages then read it from memory.
    deadline = time.monotonic() + 10
    while client.get("/offsite/prod/site1.example.com").status == 503 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get("/offsite/prod/site2.example.com").status == 200
    assert snapshot_calls(listing_world) == 1


def test_a_failed_listing_is_remembered_for_a_while(listing_world, make_client):
    listing_world.mode.write_text("fail")
    client = make_client()
    for _ in range(5):
        answer = client.get("/offsite/prod/site1.example.com")
        assert answer.status == 502 and "refused the password" in answer.json()["message"]
    assert snapshot_calls(listing_world) == 1


def test_a_restore_from_an_unreadable_repository_is_refused_with_502_and_the_cause(listing_world, make_client):
    """OffsiteFailed is a job's failure and, in a restore's plan, the request's answer: 502 with restic's cause."""
    listing_world.mode.write_text("fail")
    client = make_client()
    for action in ("restore_site", "test_restore"):
        answer = client.post_json(
            "/action",
            {"action": action, "stack": "prod", "site": SITE, "backup": "2001-01-01_00-00-00", "source": "offsite"},
        )
        assert answer.status == 502, answer.json()
        assert answer.json()["success"] is False and "refused the password" in answer.json()["message"]
    assert not [j for j in client.services.jobs.list(stack="prod") if j["action"] in ("restore_site", "test_restore")]
