"""CSRF: every POST needs the session's token and a same-site origin; nothing reaches the agent otherwise."""

import pytest

ACTION = "/site/prod/site1.example.com/backup"


def action_requests(agent):
    return [r for r in agent.requests if r[0] == "POST"]


def test_post_without_token_is_refused_and_nothing_is_sent(logged_in, fake_agent):
    response = logged_in.post(ACTION, data={})
    assert response.status == 403
    assert action_requests(fake_agent) == []


def test_post_with_a_wrong_token_is_refused_and_nothing_is_sent(logged_in, fake_agent):
    response = logged_in.post(ACTION, data={"csrf_token": "x" * 43}, headers={"Accept": "application/json"})
    assert response.status == 403
    assert response.json()["success"] is False
    assert action_requests(fake_agent) == []


def test_token_of_another_session_is_refused(logged_in, app, fake_agent):
    from support.wsgi import WSGIClient

    other = WSGIClient(app)
    other.login()
    response = logged_in.post(ACTION, data={"csrf_token": other.page_token()})
    assert response.status == 403
    assert action_requests(fake_agent) == []


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://dash.test.evil.example", "null", "https://dash.test"]
)
def test_cross_origin_post_is_refused_even_with_a_valid_token(logged_in, fake_agent, origin):
    token = logged_in.page_token()
    response = logged_in.post(ACTION, data={"csrf_token": token}, headers={"Origin": origin})
    assert response.status == 403
    assert action_requests(fake_agent) == []


def test_sec_fetch_site_cross_site_without_origin_is_refused(logged_in, fake_agent):
    token = logged_in.page_token()
    response = logged_in.post(ACTION, data={"csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}, origin=None)
    assert response.status == 403
    assert action_requests(fake_agent) == []


def test_valid_token_in_form_field_is_accepted(logged_in, fake_agent):
    token = logged_in.page_token()
    response = logged_in.post(ACTION, data={"csrf_token": token})
    assert response.status == 303
    assert action_requests(fake_agent)[0][2] == {"action": "backup_site", "stack": "prod", "site": "site1.example.com"}


def test_valid_token_in_header_is_accepted_for_json(logged_in, fake_agent):
    token = logged_in.page_token()
    response = logged_in.post(
        ACTION, json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}, origin=None
    )
    assert response.status == 202
    assert response.json()["success"] is True


def test_default_port_in_host_matches_origin_without_port(app):
    from support.wsgi import WSGIClient

    client = WSGIClient(app, host="dash.test:443", scheme="https")
    client.login()
    token = client.page_token()
    assert client.post(ACTION, data={"csrf_token": token}, headers={"Origin": "https://dash.test"}).status == 303


@pytest.mark.parametrize(
    "path",
    [
        ACTION,
        "/site/prod/site1.example.com/restart",
        "/site/prod/site1.example.com/migrate",
        "/stack/prod/restart",
        "/stack/prod/update",
    ],
)
def test_get_on_an_action_url_is_405_and_does_nothing(logged_in, fake_agent, path):
    response = logged_in.get(path)
    assert response.status == 405
    assert action_requests(fake_agent) == []


def test_logout_post_needs_the_token(logged_in):
    assert logged_in.post("/logout", data={}).status == 403
    assert logged_in.get("/dashboard").status == 200
