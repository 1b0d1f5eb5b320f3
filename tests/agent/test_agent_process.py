"""The agent as a real process: CLI, serving, SIGTERM, jobs across restarts, SIGKILL mid-backup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.polling import wait_for

from fmappliance.version import __version__


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fmappliance.agent", *args], capture_output=True, text=True, timeout=60
    )


def test_version_and_check_config(world):
    res = run_cli("--version")
    assert res.returncode == 0 and __version__ in res.stdout
    res = run_cli("--config", str(world.config_path), "--check-config")
    assert res.returncode == 0
    assert res.stdout.strip() == "config OK: 2 stacks"


def test_config_errors_are_one_line_exit_2_and_never_a_traceback(world, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(world.config_path.read_text().replace("security:", "security:\n  tokn: x", 1))
    for path in (bad, tmp_path / "missing.yaml"):
        for extra in ((), ("--check-config",)):
            res = run_cli("--config", str(path), *extra)
            assert res.returncode == 2, res
            assert "Traceback" not in res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and str(path) in lines[0]
    assert "tokn" in run_cli("--config", str(bad)).stderr


def test_serves_requires_the_token_and_stops_cleanly_on_sigterm(world, agent_process):
    agent = agent_process()
    assert agent.request("GET", "/", token=None) == (200, {"status": "ok", "version": __version__})
    status, body = agent.request("GET", "/stacks", token=None)
    assert status == 401 and body["success"] is False
    status, body = agent.request("GET", "/stacks")
    assert status == 200 and {s["status"] for s in body["stacks"]} == {"running"}
    assert agent.stop() == 0
    log = agent.log_path.read_text()
    assert f"listening on http://127.0.0.1:{agent.port}" in log
    assert "Traceback" not in log and "test-token" not in log


def test_jobs_survive_a_restart_of_the_agent(world, agent_process):
    agent = agent_process()
    status, body = agent.request("POST", "/action", {"action": "backup_site", "stack": "erp", "site": "erp.localhost"})
    assert status == 202
    job_id = body["job"]["id"]
    done = agent.wait_job(job_id)
    assert done["status"] == "succeeded"
    agent.stop()
    agent = agent_process()
    status, job = agent.request("GET", f"/jobs/{job_id}")
    assert (
        status == 200
        and job["status"] == "succeeded"
        and job["result"]["backup"]["id"] == done["result"]["backup"]["id"]
    )
    status, body = agent.request("GET", "/jobs?stack=erp")
    assert [j["id"] for j in body["jobs"]] == [job_id]
    status, body = agent.request("GET", "/backups/erp/erp.localhost")
    assert [b["id"] for b in body["backups"]] == [done["result"]["backup"]["id"]]


def test_sigkill_in_the_middle_of_a_backup_publishes_nothing_and_fails_the_job(world, agent_process):
    world.doubles.set_faults(hang={"compose cp": 120})
    agent = agent_process()
    status, body = agent.request(
        "POST", "/action", {"action": "backup_site", "stack": "prod", "site": "site1.example.com"}
    )
    assert status == 202
    job_id = body["job"]["id"]
    wait_for(world.doubles.hanging_pids, 20, "the backup to reach the copy step")
    assert agent.request("GET", f"/jobs/{job_id}")[1]["status"] == "running"
    staging = Path(world.config["agent"]["state_dir"]) / "staging"
    assert any(staging.iterdir())
    # Leftovers a crash can leave: a staging copy and a publish temp file in the site's backup dir.
    (next(staging.iterdir()) / "20260101_000000-site1_example_com-database.sql.gz").write_bytes(b"partial")
    site_dir = Path(world.config["backups"]["base_path"]) / "prod" / "site1.example.com"
    site_dir.mkdir(parents=True, exist_ok=True)
    (site_dir / ".2026-01-01_00-00-00.sql.gz.tmp-0123abcd").write_bytes(b"partial")
    agent.kill()

    world.doubles.set_faults()
    agent = agent_process()
    status, job = agent.request("GET", f"/jobs/{job_id}")
    assert job["status"] == "failed" and "stopped" in job["message"] and job["finished"]
    assert list(staging.iterdir()) == []
    assert [p.name for p in site_dir.iterdir() if p.name != ".lock"] == []
    status, body = agent.request("GET", "/backups/prod/site1.example.com")
    assert body == {"backups": []}
    # The agent works normally afterwards.
    status, body = agent.request(
        "POST", "/action", {"action": "backup_site", "stack": "prod", "site": "site1.example.com"}
    )
    assert agent.wait_job(body["job"]["id"])["status"] == "succeeded"


def test_a_port_in_use_is_one_clear_line_and_exit_1(world, agent_process):
    agent = agent_process()
    world.write_config(agent={"port": agent.port})  # a second agent on the first one's port
    res = run_cli("--config", str(world.config_path))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "cannot listen on 127.0.0.1:" in res.stderr
