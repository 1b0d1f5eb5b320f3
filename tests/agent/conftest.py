"""A tmp world for agent tests: the docker double, the real fm 0.20.0, one compose stack, one fm bench
(built by ``support.world``, shared with the browser suite).

``world``          paths, the config, and ``world.doubles`` (DoubleWorld: argv log, faults, containers)
``client``         the agent app called in-process through WSGI (``client.get(path)``, ``client.post_action(...)``)
``real_fm``        the real fm's path; fails the test (with how to install it) when it is missing
``agent_process``  a factory starting ``python -m fmappliance.agent`` as a real process on a free port
"""

from __future__ import annotations

import os

import pytest
from support.config_factory import TEST_TOKEN
from support.fm_home import FM_INSTALL_HINT, real_fm_path
from support.world import (  # noqa: F401  (re-exported: agent tests and benchmarks import them from here)
    COMPOSE_SERVICES,
    COMPOSE_SITES,
    DOUBLES,
    FM_SERVICES,
    FM_SITE,
    FM_WORKERS,
    LIST_SITES_ARGV,
    AgentProcess,
    World,
    build_world,
    doubles_project,
    install_doubles,
    kill_hanging_doubles,
    make_compose_stack,
    make_fm_bench,
)
from support.wsgi import Response, WSGIClient, wait_job  # noqa: F401  (re-exported)


@pytest.fixture
def world(tmp_path) -> World:
    w = build_world(tmp_path)
    yield w
    kill_hanging_doubles(w.doubles)


@pytest.fixture
def real_fm():
    """The real Frappe Manager (tests/support/fm_home.py); a test that needs it fails when it is missing."""
    path = real_fm_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(FM_INSTALL_HINT.format(path=path), pytrace=False)
    return path


@pytest.fixture
def make_client(world):
    """Build an app for the world's current config (tests may rewrite the config first)."""
    from fmappliance.agent.app import make_app

    apps = []

    def build():
        app = make_app(world.config)
        apps.append(app)
        client = WSGIClient(app, token=TEST_TOKEN)
        client.services = app.agent_services
        return client

    yield build
    for app in apps:
        app.agent_services.close()


@pytest.fixture
def client(make_client):
    return make_client()


# ---------------------------------------------------------------------- a real agent process


@pytest.fixture
def agent_process(world):
    """Factory: ``agent_process()`` starts the agent on the world's config and port; stopped at teardown."""
    started = []

    def start():
        proc = AgentProcess(world.config_path, world.config["agent"]["port"], world.root / "agent.log")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.ensure_stopped()
