"""Background jobs: lifecycle, persistence, recovery, per-stack serial execution, dedup, failures."""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time

import pytest
from support.agent_contract import ISO_UTC, JOB_KEYS
from support.polling import wait_for

from fmappliance.agent.jobs import (
    ABANDONED_MESSAGE,
    INTERNAL_ERROR_MESSAGE,
    MAX_OUTPUT_CHARS,
    JobManager,
    StepFailed,
)

WAIT = 10  # generous upper bound; every wait below ends as soon as its event fires


@pytest.fixture
def manager(tmp_path):
    jobs = JobManager(str(tmp_path / "state"))
    yield jobs
    jobs.close(timeout=5)


def _gate_body(started: threading.Event, release: threading.Event, events=None, name=""):
    def body(ctx):
        if events is not None:
            events.append(f"{name} start")
        started.set()
        assert release.wait(WAIT)
        if events is not None:
            events.append(f"{name} end")
        return {"name": name}

    return body


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_job_runs_to_success_with_output_result_and_times(manager):
    def body(ctx):
        ctx.log("Backing up site1")
        ctx.run(["sh", "-c", "echo from-command"], timeout=10)
        ctx.message = "Backup of site1 on prod finished."
        return {"backup": {"id": "2026-11-25_02-00-03"}}

    job, created = manager.submit(
        action="backup_site", stack="prod", site="site1", body=body, message="Backup of site1 on prod started."
    )
    assert created and set(job) == JOB_KEYS
    assert re.fullmatch(r"[0-9a-f]{16}", job["id"])
    assert job["status"] in ("queued", "running")
    assert job["finished"] is None
    done = manager.wait(job["id"], WAIT)
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["message"] == "Backup of site1 on prod finished."
    assert done["result"] == {"backup": {"id": "2026-11-25_02-00-03"}}
    assert done["output"] == "Backing up site1\n$ sh -c 'echo from-command'\nfrom-command\n"
    for key in ("created", "started", "finished"):
        assert ISO_UTC.match(done[key]), done[key]
    assert done["created"] <= done["started"] <= done["finished"]
    assert (done["action"], done["stack"], done["site"]) == ("backup_site", "prod", "site1")


def test_a_body_returning_nothing_succeeds_with_an_empty_result(manager):
    job, _ = manager.submit(action="restart_stack", stack="prod", site=None, body=lambda ctx: None)
    done = manager.wait(job["id"], WAIT)
    assert done["status"] == "succeeded" and done["result"] == {} and done["site"] is None
    assert done["exit_code"] is None and done["message"]


def test_jobs_persist_across_a_new_manager_on_the_same_directory(tmp_path):
    first = JobManager(str(tmp_path))
    job, _ = first.submit(
        action="migrate_site", stack="prod", site="a.example.com", body=lambda ctx: ctx.log("migrated") or {"ok": True}
    )
    done = first.wait(job["id"], WAIT)
    first.close()
    second = JobManager(str(tmp_path))
    try:
        again = second.get(job["id"])
        assert again == done
        assert [j["id"] for j in second.list()] == [job["id"]]
    finally:
        second.close()


def test_jobs_left_running_or_queued_by_a_dead_agent_are_failed_at_next_start(tmp_path):
    first = JobManager(str(tmp_path))
    started, release = threading.Event(), threading.Event()
    running, _ = first.submit(action="backup_site", stack="prod", site="s1", body=_gate_body(started, release))
    queued, _ = first.submit(action="restart_stack", stack="prod", site=None, body=lambda ctx: None)
    assert started.wait(WAIT)
    first.close()  # the agent "dies": its running job never reports back
    try:
        second = JobManager(str(tmp_path))
        for job_id in (running["id"], queued["id"]):
            job = second.get(job_id)
            assert job["status"] == "failed"
            assert job["message"] == ABANDONED_MESSAGE
            assert ISO_UTC.match(job["finished"])
        second.close()
    finally:
        release.set()


def test_rows_marked_running_in_the_database_are_recovered(tmp_path):
    JobManager(str(tmp_path)).close()
    db = sqlite3.connect(tmp_path / "jobs.sqlite3")
    db.execute(
        "INSERT INTO jobs (id, action, stack, site, status, created, started)"
        " VALUES ('00000000000000aa', 'update_stack', 'prod', NULL, 'running', "
        "'2026-11-25T21:00:00Z', '2026-11-25T21:00:01Z')"
    )
    db.commit()
    db.close()
    jobs = JobManager(str(tmp_path))
    try:
        job = jobs.get("00000000000000aa")
        assert job["status"] == "failed" and job["message"] == ABANDONED_MESSAGE
    finally:
        jobs.close()


def test_jobs_on_one_stack_never_overlap_and_run_in_fifo_order(manager):
    events = []
    first_started, release_first = threading.Event(), threading.Event()
    second_started, release_second = threading.Event(), threading.Event()
    release_second.set()
    first, _ = manager.submit(
        action="update_stack", stack="prod", site=None, body=_gate_body(first_started, release_first, events, "update")
    )
    assert first_started.wait(WAIT)
    second, _ = manager.submit(
        action="backup_site", stack="prod", site="s1", body=_gate_body(second_started, release_second, events, "backup")
    )
    third, _ = manager.submit(
        action="restart_stack", stack="prod", site=None, body=lambda ctx: events.append("restart")
    )
    # While the first job holds the stack, the others stay queued.
    assert not second_started.wait(0.3)
    assert manager.get(second["id"])["status"] == "queued"
    assert manager.get(first["id"])["status"] == "running"
    release_first.set()
    for job in (first, second, third):
        assert manager.wait(job["id"], WAIT)["status"] == "succeeded"
    assert events == ["update start", "update end", "backup start", "backup end", "restart"]


def test_jobs_on_different_stacks_run_in_parallel(manager):
    other_started = threading.Event()

    def waits_for_other_stack(ctx):
        # Finishes only if the job on the other stack starts while this one runs.
        if not other_started.wait(WAIT):
            raise StepFailed("the other stack's job never started")

    a, _ = manager.submit(action="backup_site", stack="prod", site="s1", body=waits_for_other_stack)
    b, _ = manager.submit(action="backup_site", stack="staging", site="s1", body=lambda ctx: other_started.set())
    assert manager.wait(a["id"], WAIT)["status"] == "succeeded"
    assert manager.wait(b["id"], WAIT)["status"] == "succeeded"


def test_an_identical_queued_or_running_job_is_returned_instead_of_a_second(manager):
    started, release = threading.Event(), threading.Event()
    first, created = manager.submit(action="backup_site", stack="prod", site="s1", body=_gate_body(started, release))
    assert created and started.wait(WAIT)
    again, created_again = manager.submit(
        action="backup_site", stack="prod", site="s1", body=lambda ctx: pytest.fail("must not run")
    )
    assert not created_again and again["id"] == first["id"] and again["status"] == "running"
    queued, _ = manager.submit(action="backup_site", stack="prod", site="s2", body=lambda ctx: None)
    queued_again, created_again = manager.submit(
        action="backup_site", stack="prod", site="s2", body=lambda ctx: pytest.fail("must not run")
    )
    assert not created_again and queued_again["id"] == queued["id"] and queued_again["status"] == "queued"
    release.set()
    manager.wait(first["id"], WAIT)
    manager.wait(queued["id"], WAIT)
    later, created_later = manager.submit(action="backup_site", stack="prod", site="s1", body=lambda ctx: None)
    assert created_later and later["id"] != first["id"]
    manager.wait(later["id"], WAIT)
    assert len(manager.list(stack="prod")) == 3


def test_step_failed_fails_the_job_with_its_message(manager):
    def body(ctx):
        ctx.log("checking disk")
        raise StepFailed("Not enough free space in /var/backups/fmappliance (needs 2 GB).")

    job, _ = manager.submit(action="backup_site", stack="prod", site="s1", body=body)
    done = manager.wait(job["id"], WAIT)
    assert done["status"] == "failed"
    assert done["message"] == "Not enough free space in /var/backups/fmappliance (needs 2 GB)."
    assert done["result"] == {} and "checking disk" in done["output"]


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_failing_command_fails_the_job_naming_the_command_and_exit_code(manager):
    def body(ctx):
        ctx.run(["sh", "-c", "echo pulling; exit 4"], timeout=10, label="docker compose pull")
        return {"unreachable": True}

    job, _ = manager.submit(action="update_stack", stack="prod", site=None, body=body)
    done = manager.wait(job["id"], WAIT)
    assert done["status"] == "failed"
    assert done["message"] == "`docker compose pull` failed with exit code 4."
    assert done["exit_code"] == 4
    assert "pulling" in done["output"] and done["result"] == {}


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_check_false_lets_the_body_handle_a_failure(manager):
    def body(ctx):
        result = ctx.run(["sh", "-c", "exit 2"], timeout=10, check=False)
        return {"first_exit": result.exit_code}

    done = manager.wait(manager.submit(action="migrate_site", stack="prod", site="s", body=body)[0]["id"], WAIT)
    assert done["status"] == "succeeded" and done["result"] == {"first_exit": 2} and done["exit_code"] == 2


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_command_timeout_fails_the_job_saying_so(manager):
    def body(ctx):
        return ctx.run(["sleep", "30"], timeout=0.3)

    done = manager.wait(manager.submit(action="migrate_site", stack="prod", site="s", body=body)[0]["id"], WAIT)
    assert done["status"] == "failed"
    assert done["message"].startswith("`sleep 30` timed out after 0.3 s")
    assert "timed out" in done["output"]


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_missing_binary_fails_the_job_with_a_clear_message(manager):
    def body(ctx):
        return ctx.run(["fm-not-installed", "-n", "restart", "erp"], timeout=5)

    done = manager.wait(manager.submit(action="restart_stack", stack="erp", site=None, body=body)[0]["id"], WAIT)
    assert done["status"] == "failed"
    assert "`fm-not-installed` was not found on PATH" in done["message"]
    assert done["exit_code"] is None


def test_an_unexpected_exception_hides_the_traceback_from_the_job(manager, caplog):
    def body(ctx):
        ctx.log("about to break")
        raise ValueError("internal detail xyz")

    with caplog.at_level(logging.ERROR, logger="fmappliance.agent.jobs"):
        done = manager.wait(manager.submit(action="restart_stack", stack="prod", site=None, body=body)[0]["id"], WAIT)
    assert done["status"] == "failed"
    assert done["message"] == INTERNAL_ERROR_MESSAGE
    for text in (done["message"], done["output"], str(done["result"])):
        assert "Traceback" not in text and "internal detail xyz" not in text
    logged = [r for r in caplog.records if r.exc_info]
    assert logged and "internal detail xyz" in str(logged[0].exc_info[1])


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_secrets_are_redacted_in_job_output(tmp_path):
    jobs = JobManager(str(tmp_path), redact=["tok-1234567890"])
    try:

        def body(ctx):
            ctx.log("using tok-1234567890")
            ctx.run(["sh", "-c", "echo tok-1234567890; echo 'DB Root Password: rootpw'"], timeout=10)

        done = jobs.wait(jobs.submit(action="restart_stack", stack="prod", site=None, body=body)[0]["id"], WAIT)
        assert "tok-1234567890" not in done["output"] and "rootpw" not in done["output"]
        assert "using ***" in done["output"]
    finally:
        jobs.close()


def test_list_is_newest_first_filtered_by_stack_and_limited(manager):
    ids = []
    for n, stack in enumerate(["prod", "staging", "prod", "staging", "prod"]):
        job, _ = manager.submit(action="backup_site", stack=stack, site=f"s{n}", body=lambda ctx: None)
        manager.wait(job["id"], WAIT)
        ids.append((stack, job["id"]))
    assert [j["id"] for j in manager.list()] == [i for _, i in reversed(ids)]
    assert [j["id"] for j in manager.list(stack="prod")] == [i for s, i in reversed(ids) if s == "prod"]
    assert [j["id"] for j in manager.list(limit=2)] == [ids[4][1], ids[3][1]]
    assert len(manager.list(limit=0)) == 1
    assert len(manager.list(limit=100_000)) == 5
    assert manager.list(stack="nope") == []
    assert manager.get("0123456789abcdef") is None


def test_output_is_visible_while_the_job_is_still_running(manager):
    started, release = threading.Event(), threading.Event()

    def body(ctx):
        ctx.log("step one done")
        started.set()
        assert release.wait(WAIT)
        ctx.log("step two done")

    job, _ = manager.submit(action="update_stack", stack="prod", site=None, body=body)
    try:
        assert started.wait(WAIT)
        live = manager.get(job["id"])
        assert live["status"] == "running" and live["output"] == "step one done\n"
        assert manager.list()[0]["output"] == "step one done\n"
    finally:
        release.set()
    assert manager.wait(job["id"], WAIT)["output"] == "step one done\nstep two done\n"


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_live_output_reaches_the_database_while_running(tmp_path):
    jobs = JobManager(str(tmp_path))
    started, release = threading.Event(), threading.Event()

    def body(ctx):
        ctx.run(["sh", "-c", "echo first; sleep 0.7; echo second"], timeout=10)
        started.set()
        assert release.wait(WAIT)

    job, _ = jobs.submit(action="update_stack", stack="prod", site=None, body=body)
    try:
        assert started.wait(WAIT)
        db = sqlite3.connect(tmp_path / "jobs.sqlite3")
        stored = db.execute("SELECT output, status FROM jobs WHERE id=?", (job["id"],)).fetchone()
        db.close()
        assert stored[1] == "running" and "first" in stored[0]
    finally:
        release.set()
        jobs.wait(job["id"], WAIT)
        jobs.close()


def test_job_output_is_bounded(manager):
    def body(ctx):
        for n in range(20_000):
            ctx.log(f"line {n:06d}")

    done = manager.wait(manager.submit(action="update_stack", stack="prod", site=None, body=body)[0]["id"], WAIT)
    assert len(done["output"]) <= MAX_OUTPUT_CHARS
    assert done["output"].endswith("line 019999\n")
    assert done["output"].startswith("[... earlier output cut ...]\nline ")


def test_on_finish_and_on_start_are_called(tmp_path):
    finished = []
    jobs = JobManager(str(tmp_path), on_finish=finished.append)
    starts = []
    try:
        job, _ = jobs.submit(
            action="restart_stack", stack="prod", site=None, body=lambda ctx: None, on_start=starts.append
        )
        jobs.wait(job["id"], WAIT)
        wait_for(lambda: finished, WAIT, interval=0.01)
        assert finished[0]["id"] == job["id"] and finished[0]["status"] == "succeeded"
        assert starts[0]["id"] == job["id"] and starts[0]["status"] == "running"
    finally:
        jobs.close()


def test_a_closed_manager_accepts_no_jobs(tmp_path):
    jobs = JobManager(str(tmp_path))
    jobs.close()
    with pytest.raises(RuntimeError):
        jobs.submit(action="restart_stack", stack="prod", site=None, body=lambda ctx: None)


def test_old_jobs_are_pruned_to_the_newest_5000(tmp_path, monkeypatch):
    import fmappliance.agent.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "KEEP_JOBS", 3)
    first = JobManager(str(tmp_path))
    ids = []
    for n in range(5):
        job, _ = first.submit(action="backup_site", stack="prod", site=f"s{n}", body=lambda ctx: None)
        first.wait(job["id"], WAIT)
        ids.append(job["id"])
    first.close()
    second = JobManager(str(tmp_path))
    try:
        assert [j["id"] for j in second.list()] == ids[:1:-1]
    finally:
        second.close()


def test_the_job_store_is_private_to_the_agent(tmp_path):
    jobs = JobManager(str(tmp_path / "state"))
    jobs.close()
    assert (tmp_path / "state" / "jobs.sqlite3").stat().st_mode & 0o077 == 0
    assert (tmp_path / "state").stat().st_mode & 0o077 == 0


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_a_job_time_limit_caps_its_commands(manager):
    seen = {}

    def body(ctx):
        seen["left"] = ctx.deadline_left()
        ctx.run(["sleep", "30"], timeout=60)

    started = time.monotonic()
    job, _ = manager.submit(action="backup_site", stack="prod", site="s1", body=body, timeout=0.5)
    done = manager.wait(job["id"], WAIT)
    assert time.monotonic() - started < 5
    assert 0 < seen["left"] <= 0.5
    assert done["status"] == "failed" and "timed out after 0.5 s" in done["message"]
