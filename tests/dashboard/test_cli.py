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

    path = write_config(tmp_path)
    port = load_config(path)["dashboard"]["port"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = run("--config", str(path))
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "Traceback" not in result.stderr
