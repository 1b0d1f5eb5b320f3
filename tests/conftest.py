"""Which tests are quick: ``make check`` runs the unit tests (``-m "not slow"``), ``make test`` runs all.

A test is ``slow`` when it starts a process: the agent or the dashboard as a real service, the docker
double or the real fm, nginx, Chromium, the installer, restic. It is marked here, from the fixtures it
uses and the module it lives in, so nobody has to remember the marker. Every other test is a unit test
and must start no process; when ``slow`` tests are left out, that is enforced: a unit test that starts
one fails and says where to classify it. This keeps ``make check`` under a minute.
"""

from __future__ import annotations

import sys
import threading

import pytest

# Fixtures that start processes (directly or through the docker double and the real fm they drive).
PROCESS_FIXTURES = frozenset(
    {
        "world",  # tests/agent: the docker double, the real fm 0.20.0, bench doubles
        "agent_process",
        "real_fm",
        "served",  # tests/browser: agent + dashboard + doubles as processes
        "browser",
        "dist",  # tests/install: builds or reuses the zipapps and runs them
        "procs",  # tests/test_sockets.py
        "hub",  # tests/fleet: dashboard hub and uplinks as processes
        "servers",
    }
)

# Modules (relative to tests/) whose tests start processes without one of the fixtures above.
PROCESS_MODULES = frozenset(
    {
        "install",  # every installer, nginx, build and systemd test
        "browser",
        "fleet/test_fleet_link.py",
        "fleet/test_fleet_inventory.py",  # the fleet CLI as a process
        "dashboard/test_fleet_manage.py",  # openssl makes the hub's key and certificate
        "agent/test_offsite_hosts.py",  # the real restic
        "agent/test_runner.py",  # the command runner: every test runs commands
        "agent/test_offsite_s3.py",  # the real restic against a moto S3 server
        "test_proxy_secret.py",
        "test_lock.py",
        "dashboard/test_served.py",
        "dashboard/test_cli.py",
        "dashboard/test_reset_2fa_privileges.py",
    }
)


def _relative(item: pytest.Item) -> str:
    path = item.path.as_posix()
    return path.split("/tests/", 1)[1] if "/tests/" in path else path


def _starts_processes(item: pytest.Item) -> bool:
    if item.get_closest_marker("browser") or item.get_closest_marker("nginx"):
        return True
    if PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    rel = _relative(item)
    return any(rel == module or rel.startswith(module + "/") for module in PROCESS_MODULES) or rel.endswith("_e2e.py")


# Installer tests that change this host itself (users, /opt, /etc, /run, ports 8000/9100, nginx) are
# marked `host`: `make test` runs them after the parallel run, one after another, never side by side.
# (Not xdist_group: pytest-xdist 3.8's loadgroup renames item._nodeid, which pytest 9.2 no longer reads.)
HOST_MODULES = frozenset({"install/test_install_host.py", "install/test_install_hardening.py"})


# Modules holding tests of 30 s and more (real minute boundaries, whole installs, builds from nothing).
# pytest-xdist hands tests out in collection order, so these start first and overlap the many short
# ones, instead of being collected last (tests/test_*.py) and making the run's tail.
START_FIRST = (
    "test_schedules_without_dashboard_e2e.py",
    "install/test_install_root.py",
    "agent/test_schedule_runner_process.py",
    "test_scheduled_e2e.py",
    "install/test_build.py",
    "fleet/test_fleet_link.py",
)


@pytest.hookimpl(tryfirst=True)  # before -m reads the marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") is None and _starts_processes(item):
            item.add_marker(pytest.mark.slow)
        if _relative(item) in HOST_MODULES:
            item.add_marker(pytest.mark.host)
    # A stable sort: the same order on every xdist worker, each module's tests kept together and in order.
    first = {module: rank for rank, module in enumerate(START_FIRST)}
    items.sort(key=lambda item: first.get(_relative(item).split("::", 1)[0], len(first)))


# ------------------------------------------------------------------ unit tests start no process

_current: dict[str, str | None] = {"test": None}
_spawned: list[str] = []
_lock = threading.Lock()
_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.forkpty", "os.system", "os.exec"})


def _audit(event: str, args) -> None:
    if event in _SPAWN_EVENTS and _current["test"] is not None:
        with _lock:
            _spawned.append(f"{event} {str(args[0])[:120] if args else ''}")


def _unit_session(config) -> bool:
    """Only when slow tests are deselected: then no leftover thread of a slow test can start a process."""
    expr = (config.getoption("markexpr", "") or "").replace(" ", "")
    return "notslow" in expr


def pytest_configure(config):
    if _unit_session(config):
        sys.addaudithook(_audit)  # cannot be removed; it does nothing outside a running unit test


def pytest_runtest_setup(item):
    # Fixtures count too: a unit test's fixtures start no process either.
    if _unit_session(item.config):
        _current["test"] = item.nodeid
        del _spawned[:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    try:
        return (yield)
    finally:
        _current["test"] = None
        if _spawned:
            spawned, _spawned[:] = _spawned[0], []
            pytest.fail(
                f"this unit test started a process ({spawned}): unit tests start none; "
                "if it must, list its fixture or module in tests/conftest.py so it is marked slow",
                pytrace=False,
            )
