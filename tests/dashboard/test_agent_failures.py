"""Agent down, slow or refusing: clear messages, pages still render with a banner."""

import html

import pytest
from support.config_factory import TEST_TOKEN, write_config
from support.ports import refused_port
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.agent_client import AgentClient, AgentError
from fmappliance.dashboard.app import make_app


@pytest.fixture
def dead_agent_client(tmp_path, clock):
    with refused_port() as port:
        config = load_config(write_config(tmp_path, dashboard={"agent_url": f"http://127.0.0.1:{port}"}))
        client = WSGIClient(make_app(config, clock=clock))
        client.login()
        yield client, port


def test_agent_down_dashboard_renders_with_a_banner(dead_agent_client):
    client, port = dead_agent_client
    response = client.get("/dashboard")
    assert response.status == 200
    assert f"Agent unreachable at 127.0.0.1:{port}: connection refused" in response.text
    assert 'class="banner notice notice-error"' in response.text
    assert "No stacks configured" not in response.text  # not mistaken for an empty inventory


def test_agent_down_action_gives_a_clear_error_in_every_shape(dead_agent_client):
    client, port = dead_agent_client
    token = client.page_token()
    as_json = client.post("/stack/prod/restart", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert as_json.status == 502
    assert as_json.json() == {
        "success": False,
        "message": f"Agent unreachable at 127.0.0.1:{port}: connection refused; is fm-agent running?",
        "job": None,
    }
    htmx = client.post("/stack/prod/restart", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert htmx.status == 200 and 'class="notice notice-error"' in htmx.text and "connection refused" in htmx.text
    plain = client.post("/stack/prod/restart", data={"csrf_token": token})
    assert plain.status == 303
    assert "connection refused" in client.get("/dashboard").text


def test_agent_down_other_pages_still_render(dead_agent_client):
    client, _ = dead_agent_client
    for path in ("/stack/prod", "/backups/prod/site1.example.com", "/jobs/0000000000000001", "/audit"):
        response = client.get(path)
        assert response.status == 200, path
        assert "connection refused" in response.text or path == "/audit"


def test_wrong_token_is_reported_as_a_configuration_problem(logged_in, fake_agent):
    fake_agent.token = "another-token-0123456789abcdef0123456789"
    text = html.unescape(logged_in.get("/dashboard").text)
    assert "The agent rejected the dashboard's token (401): check security.token" in text


@pytest.mark.parametrize(
    "status,expected",
    [(500, "The agent failed (500): fake failure 500"), (409, "fake failure 409"), (404, "fake failure 404")],
)
def test_agent_errors_on_actions_become_notices(logged_in, fake_agent, status, expected):
    fake_agent.fail_paths = {"/action": status}
    token = logged_in.page_token()
    response = logged_in.post(
        "/stack/prod/restart", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    )
    assert response.json()["message"] == expected
    assert response.status == (502 if status == 500 else status)
    htmx = logged_in.post("/stack/prod/restart", data={"csrf_token": token}, headers={"HX-Request": "true"})
    assert expected in htmx.text and "notice-error" in htmx.text


def test_agent_500_on_stacks_shows_a_banner(logged_in, fake_agent):
    fake_agent.fail_status = 500
    response = logged_in.get("/dashboard")
    assert response.status == 200 and "The agent failed (500)" in response.text


def test_slow_agent_times_out_with_a_clear_message(fake_agent, config, clock):
    agent_client = AgentClient(fake_agent.url, TEST_TOKEN, timeout=0.3)
    client = WSGIClient(make_app(config, agent_client=agent_client, clock=clock))
    client.login()
    fake_agent.hang.set()
    try:
        response = client.get("/dashboard")
    finally:
        fake_agent.release.set()
    assert response.status == 200
    assert f"Agent at 127.0.0.1:{fake_agent.port} did not answer within 0.3 s" in response.text


def test_stacks_are_cached_briefly_failures_included(fake_agent):
    now = [0.0]
    agent_client = AgentClient(fake_agent.url, TEST_TOKEN, timeout=2, cache_seconds=2, clock=lambda: now[0])
    agent_client.stacks()
    agent_client.stacks()
    assert [r[1] for r in fake_agent.requests] == ["/stacks"]
    fake_agent.fail_status = 500
    now[0] = 5
    for _ in range(3):
        with pytest.raises(AgentError):
            agent_client.stacks()
    assert len(fake_agent.requests) == 2
