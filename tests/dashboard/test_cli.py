"""The command line: hash-password, --check-config, --version."""

import subprocess
import sys

import bcrypt
from support.config_factory import write_config

from fmappliance.version import __version__


def run(*args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_hash_password_reads_stdin_and_prints_a_cost_12_bcrypt_hash():
    result = run("hash-password", stdin="s3cret pass\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$2b$12$")
    assert bcrypt.checkpw(b"s3cret pass", hashed.encode())


def test_hash_password_refuses_more_than_72_bytes():
    result = run("hash-password", stdin="€" * 25 + "\n")
    assert result.returncode == 1
    assert "limited to 72 bytes" in result.stderr and result.stdout == ""


def test_hash_password_refuses_an_empty_password():
    result = run("hash-password", stdin="\n")
    assert result.returncode == 1 and result.stdout == ""


def test_check_config_accepts_a_valid_config(tmp_path):
    result = run("--config", str(write_config(tmp_path)), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_names_the_problem_and_exits_2(tmp_path):
    path = write_config(tmp_path, dashboard={"port": 99999})
    result = run("--config", str(path), "--check-config")
    assert result.returncode == 2
    assert "dashboard.port" in result.stderr and str(path) in result.stderr


def test_check_config_on_a_missing_file_exits_2(tmp_path):
    result = run("--config", str(tmp_path / "nope.yaml"), "--check-config")
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_version():
    result = run("--version")
    assert result.returncode == 0 and f"fm-dashboard {__version__}" in result.stdout


def test_a_port_in_use_gives_one_clear_line_not_a_traceback(tmp_path):
    import socket

    from fmappliance.config import load_config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        path = write_config(tmp_path, dashboard={"port": busy.getsockname()[1]})
        assert load_config(path)["dashboard"]["port"] == busy.getsockname()[1]
        result = run("--config", str(path))
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr


def _without_file_override():
    """For root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the child, so another user's
    0600 file is as unreadable to it as to the dashboard's own user (root reads everything)."""
    import ctypes
    import os

    if os.geteuid() != 0:
        return None

    def drop():
        libc = ctypes.CDLL(None, use_errno=True)
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def _agent_owned_secret(path, text):
    """A 0600 file the dashboard cannot read (owned by another user; mode 000 when not root)."""
    import os

    path.write_text(text)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, 65534, 65534)
    else:
        os.chmod(path, 0)
    return str(path)


def run_unprivileged(*args):
    return subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_without_file_override(),
    )


def test_the_dashboard_starts_with_offsite_credential_files_it_cannot_read(tmp_path):
    offsite = {
        "repository": "s3:https://s3.example.com/bucket/fm",
        "password_file": _agent_owned_secret(tmp_path / "offsite.password", "repo-password\n"),
        "env_file": _agent_owned_secret(tmp_path / "offsite.env", "AWS_SECRET_ACCESS_KEY=abcdefsecret\n"),
    }
    result = run_unprivileged("--config", str(write_config(tmp_path, offsite=offsite)), "--check-config")
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "Traceback" not in result.stderr


def test_an_unreadable_file_the_dashboard_needs_is_one_line_and_exit_2(tmp_path):
    token_file = _agent_owned_secret(tmp_path / "agent.token", "t" * 40 + "\n")
    path = write_config(tmp_path, security={"token": None, "token_file": token_file})
    result = run_unprivileged("--config", str(path), "--check-config")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "security.token_file" in lines[0] and "cannot read" in lines[0], result.stderr
