"""The process runner: argv only, merged live output, redaction, timeouts that kill the whole group."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from fmappliance.agent import runner
from fmappliance.agent.runner import CommandResult, redact_text, resolve_binary, run_command


def _running(pid: int) -> bool:
    """True when the process exists and is not a zombie (PID 1 here may not reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(int(entry))
    return members


def test_a_shell_string_is_refused():
    with pytest.raises(TypeError):
        run_command("echo hi; id", timeout=5)
    with pytest.raises(TypeError):
        run_command([], timeout=5)


def test_success_and_exit_codes_are_reported():
    good = run_command(["true"], timeout=5)
    assert good.ok and good.exit_code == 0 and good.error is None and not good.timed_out
    bad = run_command(["sh", "-c", "exit 3"], timeout=5)
    assert bad.exit_code == 3 and not bad.ok and bad.error is None


def test_stdout_and_stderr_are_merged_in_order():
    result = run_command(["sh", "-c", "echo one; echo two >&2; echo three; printf 'no newline'"], timeout=5)
    assert result.output == "one\ntwo\nthree\nno newline\n"


def test_output_lines_are_delivered_while_the_command_still_runs(tmp_path):
    flag = tmp_path / "flag"
    seen = []

    def on_output(line):
        seen.append(line)
        if line == "ready":
            flag.touch()  # the command waits for this: only live delivery lets it finish

    script = f"echo ready; while [ ! -e {flag} ]; do sleep 0.02; done; echo done"
    result = run_command(["sh", "-c", script], timeout=10, on_output=on_output)
    assert result.ok, result
    assert seen == ["ready", "done"]


def test_known_secrets_and_password_lines_are_redacted_everywhere():
    script = (
        "echo 'token is s3cr3t-token-value'; "
        "echo 'DB Root Password: rootpw123'; "
        "echo '│ Admin Password │ adminpw │'; "
        'echo \'{"db_password": "dbpw", "db_name": "_abc"}\'; '
        "echo 'password: lowercase-pw'"
    )
    lines = []
    result = run_command(["sh", "-c", script], timeout=5, redact=["s3cr3t-token-value"], on_output=lines.append)
    for text in (result.output, "\n".join(lines)):
        for secret in ("s3cr3t-token-value", "rootpw123", "adminpw", "dbpw", "lowercase-pw"):
            assert secret not in text
    assert '"db_name": "_abc"' in result.output
    assert "DB Root Password: ***" in result.output


def test_redaction_leaves_ordinary_text_alone():
    assert redact_text("Reset password for user Administrator") == "Reset password for user Administrator"
    assert redact_text("Migrating site1.example.com") == "Migrating site1.example.com"
    assert redact_text("--admin-password hunter2 --x") == "--admin-password *** --x"


def test_timeout_kills_the_whole_process_group_including_grandchildren():
    started = time.monotonic()
    result = run_command(["sh", "-c", "echo $$; sleep 100 & echo $!; sleep 100"], timeout=0.5)
    elapsed = time.monotonic() - started
    assert result.timed_out and not result.ok
    assert "timed out after 0.5 s" in result.error
    shell_pid, background_pid = (int(x) for x in result.output.split()[:2])
    assert not _running(background_pid)
    assert _group_members(shell_pid) == []
    assert elapsed < 4


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(monkeypatch):
    monkeypatch.setattr(runner, "KILL_GRACE_SECONDS", 0.3)
    result = run_command(["sh", "-c", "trap '' TERM; echo $$; sleep 100 & wait"], timeout=0.3)
    assert result.timed_out
    pgid = int(result.output.split()[0])
    assert _group_members(pgid) == []


def test_a_missing_binary_is_a_clear_error_not_an_exception(tmp_path):
    result = run_command(["fm-does-not-exist"], timeout=5)
    assert isinstance(result, CommandResult)
    assert not result.ok and result.exit_code is None
    assert result.error == (
        "`fm-does-not-exist` was not found on PATH; install it or set its full path in the agent's config."
    )
    by_path = run_command([str(tmp_path / "nope")], timeout=5)
    assert "does not exist" in by_path.error
    not_executable = tmp_path / "script"
    not_executable.write_text("#!/bin/sh\n")
    denied = run_command([str(not_executable)], timeout=5)
    assert "permission denied" in denied.error


def test_stdin_is_dev_null_so_cat_finishes_at_once():
    started = time.monotonic()
    result = run_command(["cat"], timeout=10)
    assert result.ok and result.output == ""
    assert time.monotonic() - started < 2


def test_output_keeps_only_a_bounded_tail():
    result = run_command(["seq", "1", "100000"], timeout=10, max_output=1000)
    assert result.ok
    assert len(result.output) <= 1000
    assert result.output.endswith("99999\n100000\n")
    assert result.output.startswith(runner.TRUNCATION_NOTE)


def test_without_env_the_command_gets_a_minimal_environment(monkeypatch):
    monkeypatch.setenv("FMAPPLIANCE_TEST_SECRET", "must-not-leak")
    for name in runner.DOCKER_ENV:
        monkeypatch.delenv(name, raising=False)
    result = run_command(["env"], timeout=5)
    names = sorted(line.split("=", 1)[0] for line in result.output.splitlines())
    assert names == ["HOME", "LANG", "PATH"]
    assert "LANG=C.UTF-8" in result.output
    explicit = run_command(["env"], timeout=5, env={"PATH": os.defpath, "ONLY": "this"})
    assert "ONLY=this" in explicit.output and "HOME=" not in explicit.output


def test_the_docker_engine_settings_of_the_agent_reach_its_commands_and_nothing_else(monkeypatch):
    """Rootless docker / remote engines: without these every stack would show as unknown."""
    docker_env = {
        "DOCKER_HOST": "unix:///run/user/1000/docker.sock",
        "DOCKER_CONTEXT": "rootless",
        "DOCKER_CONFIG": "/home/frappe/.docker",
        "DOCKER_CERT_PATH": "/home/frappe/.docker/certs",
        "DOCKER_TLS_VERIFY": "1",
        "XDG_RUNTIME_DIR": "/run/user/1000",
    }
    for name, value in docker_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FMAPPLIANCE_TEST_SECRET", "must-not-leak")
    monkeypatch.setenv("DOCKER_BUILDKIT", "1")
    result = run_command(["env"], timeout=5)
    got = dict(line.split("=", 1) for line in result.output.splitlines())
    assert {k: v for k, v in got.items() if k not in ("HOME", "LANG", "PATH")} == docker_env


def test_cwd_is_honoured_and_a_missing_cwd_is_reported(tmp_path):
    assert run_command(["pwd"], timeout=5, cwd=str(tmp_path)).output.strip() == str(tmp_path)
    missing = run_command(["pwd"], timeout=5, cwd=str(tmp_path / "gone"))
    assert not missing.ok and "does not exist" in missing.error


def test_a_background_process_holding_the_pipe_does_not_block_the_result(monkeypatch):
    monkeypatch.setattr(runner, "DRAIN_AFTER_EXIT_SECONDS", 0.2)
    started = time.monotonic()
    result = run_command(["sh", "-c", "sleep 30 & echo $!"], timeout=20)
    try:
        assert result.ok
        assert time.monotonic() - started < 5
    finally:
        os.kill(int(result.output.split()[0]), signal.SIGKILL)


def test_a_failing_output_callback_does_not_break_the_command():
    def broken(line):
        raise RuntimeError("listener bug")

    result = run_command(["sh", "-c", "echo a; echo b"], timeout=5, on_output=broken)
    assert result.ok and result.output == "a\nb\n"


def test_resolve_binary_searches_the_given_path(tmp_path):
    assert resolve_binary("sh") is not None
    assert resolve_binary("fm-does-not-exist") is None
    tool = tmp_path / "fm"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_binary("fm", search_path=str(tmp_path)) == str(tool)
    assert resolve_binary("fm", search_path=str(tmp_path / "empty")) is None
