"""The systemd units as install.sh writes them: verify-clean, hardened below the exposure targets."""

from __future__ import annotations

import re
import subprocess

import pytest
from install_harness import SYSTEM_PYTHON, deny_write_execute, install_env, mdwe_supported, run_install
from support.config_factory import write_config

# Targets (systemd-analyze security --offline=yes, lower is safer).
MAX_EXPOSURE = {"fm-agent.service": 2.5, "fm-dashboard.service": 1.5}


@pytest.fixture(scope="module")
def units(tmp_path_factory, dist):
    root = tmp_path_factory.mktemp("root")
    proc = run_install(root, env=install_env(dist))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root / "etc/systemd/system"


def directives(text: str) -> dict:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_systemd_analyze_verify_is_clean(units):
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(units / "fm-agent.service"), str(units / "fm-dashboard.service")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "fm-agent" in line or "fm-dashboard" in line]
    assert ours == [], ours


@pytest.mark.parametrize("unit", sorted(MAX_EXPOSURE))
def test_exposure_score_is_below_the_target(units, unit):
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(units / unit)], capture_output=True, text=True
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) < MAX_EXPOSURE[unit], proc.stdout


def test_start_order_is_docker_then_agent_then_dashboard_then_nginx(units):
    agent = directives((units / "fm-agent.service").read_text())
    dashboard = directives((units / "fm-dashboard.service").read_text())
    assert "docker.service" in " ".join(agent["After"]) and "docker.service" in " ".join(agent["Wants"])
    assert "fm-dashboard.service" in " ".join(agent["Before"])
    assert "fm-agent.service" in " ".join(dashboard["After"])
    assert "nginx.service" in " ".join(dashboard["Before"])


@pytest.mark.parametrize("name", ["fm-agent", "fm-dashboard"])
def test_each_unit_runs_its_zipapp_with_system_python_and_a_private_cache(units, name):
    unit = directives((units / f"{name}.service").read_text())
    assert unit["ExecStart"] == [f"/usr/bin/python3 /opt/fmappliance/{name}.pyz --config /etc/fmappliance/config.yaml"]
    assert f"SHIV_ROOT=%C/{name}" in unit["Environment"]
    assert unit["CacheDirectory"] == [name]
    assert unit["Restart"] == ["always"]
    assert unit["RestartPreventExitStatus"] == ["2"], "a config error must not restart in a loop"
    for hardening in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=",
        "UMask=0027",
        "SystemCallArchitectures=native",
    ):
        key, value = hardening.split("=", 1)
        assert unit[key] == [value], hardening


def test_dashboard_cannot_reach_docker_or_the_network_beyond_localhost(units):
    unit = directives((units / "fm-dashboard.service").read_text())
    assert "docker" not in unit["SupplementaryGroups"][0].split()
    inaccessible = " ".join(unit["InaccessiblePaths"])
    assert "/run/docker.sock" in inaccessible and "/var/run/docker.sock" in inaccessible
    assert unit["IPAddressDeny"] == ["any"] and unit["IPAddressAllow"] == ["localhost"]
    assert unit["User"] == ["fm-dashboard"]


def test_agent_may_write_only_to_backups_and_the_stacks(units):
    unit = directives((units / "fm-agent.service").read_text())
    assert unit["ProtectHome"] == ["read-only"]
    assert "-/var/backups/fmappliance" in unit["ReadWritePaths"][0].split()


@pytest.mark.skipif(
    not mdwe_supported(), reason="kernel without PR_SET_MDWE (Linux < 6.3): cannot emulate MemoryDenyWriteExecute"
)
def test_zipapps_work_with_write_execute_memory_denied(dist, tmp_path):
    """MemoryDenyWriteExecute=yes: Python, bcrypt and PyYAML's C parts must not need W+X pages."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHIV_ROOT": str(tmp_path / "cache")}
    hashed = subprocess.run(
        [SYSTEM_PYTHON, str(dist / "fm-dashboard.pyz"), "hash-password"],
        input="pw\n",
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=deny_write_execute,
        timeout=60,
    )
    assert hashed.returncode == 0 and hashed.stdout.startswith("$2"), hashed.stderr
    config = write_config(tmp_path)
    for name in ("fm-agent", "fm-dashboard"):
        checked = subprocess.run(
            [SYSTEM_PYTHON, str(dist / f"{name}.pyz"), "--config", str(config), "--check-config"],
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=deny_write_execute,
            timeout=60,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
