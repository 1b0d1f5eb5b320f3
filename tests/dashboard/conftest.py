"""Fixtures for the dashboard tests: a fake agent, a config, a frozen clock and an
in-process WSGI client with a cookie jar."""

from __future__ import annotations

import pytest
from fake_agent import FakeAgent
from support.config_factory import write_config
from support.webhook_receiver import WebhookReceiver
from support.wsgi import FakeClock, WSGIClient  # noqa: F401  (fixtures below)

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app


@pytest.fixture(scope="session")
def _fake_agent_server():
    agent = FakeAgent().start(threads=32)
    yield agent
    agent.stop()


@pytest.fixture
def fake_agent(_fake_agent_server):
    """The shared fake agent, back in its canned state for each test."""
    _fake_agent_server.reset()
    yield _fake_agent_server
    _fake_agent_server.release.set()


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def config(tmp_path, fake_agent):
    return load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url}))


@pytest.fixture
def app(config, clock):
    return make_app(config, clock=clock)


@pytest.fixture
def client(app):
    return WSGIClient(app)


@pytest.fixture
def logged_in(client):
    response = client.login()
    assert response.status == 303, response.text
    return client


@pytest.fixture
def webhook():
    """A local receiver for notification webhooks (``webhook.url``, ``webhook.received``)."""
    hook = WebhookReceiver()
    yield hook
    hook.close()
