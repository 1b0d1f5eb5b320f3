"""Authentication before routing, JSON errors for every status, request body rules."""

from __future__ import annotations

import json
import logging

import pytest
from support.config_factory import TEST_TOKEN

from fmappliance.version import __version__

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
PATHS = (
    "/stacks",
    "/stacks/prod",
    "/stacks/prod/sites",
    "/stacks/nosuch",
    "/action",
    "/jobs",
    "/jobs/0123456789abcdef",
    "/backups/prod/site1.example.com",
    "/backups/prod/site1.example.com/2026-01-01_00-00-00.sql.gz",
    "/nope",
    "/stacks/prod/extra/deep",
    "/admin",
    "/../etc/passwd",
    "//",
    "/%2e%2e/",
)
BAD_AUTH = (
    None,  # no header at all
    f"Bearer {TEST_TOKEN}x",
    f"Bearer {TEST_TOKEN[:-1]}",
    "Bearer ",
    "Bearer",
    f"Basic {TEST_TOKEN}",
    f"Token {TEST_TOKEN}",
    f"Bearer  {TEST_TOKEN}",
    f"Bearer {TEST_TOKEN} ",
    f"{TEST_TOKEN}",
    "Bearer \u00e9\u00e9\u00e9",
    "",
)


@pytest.mark.parametrize("method", METHODS)
def test_every_route_and_method_answers_401_json_without_a_valid_token(client, world, method):
    for path in PATHS:
        for header in BAD_AUTH:
            res = client.request(method, path, token=header if header is not None else None)
            assert res.status == 401, (method, path, header, res)
            assert res.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                body = res.json()
                assert body["success"] is False and "token" in body["message"]
    # Nothing was executed on behalf of an unauthenticated caller.
    assert world.doubles.invocations() == []


@pytest.mark.parametrize("method", ("POST", "PUT", "DELETE", "PATCH"))
def test_only_get_of_the_root_is_public(client, method):
    assert client.request(method, "/", token=None).status == 401


def test_health_check_answers_without_token_and_says_nothing_else(client):
    res = client.get("/", token=None)
    assert res.status == 200
    assert res.json() == {"status": "ok", "version": __version__}


def test_valid_token_reaches_the_routes(client):
    assert client.get("/stacks/prod/sites").json() == {"sites": ["site1.example.com", "site2.example.com"]}
    assert client.get("/jobs").json() == {"jobs": []}


def test_unknown_path_with_a_token_is_a_json_404(client):
    res = client.get("/nope")
    assert res.status == 404
    assert res.json()["success"] is False
    assert "/nope" not in res.json()["message"]


def test_wrong_method_is_a_json_405_naming_the_allowed_ones(client):
    res = client.request("DELETE", "/stacks")
    assert res.status == 405
    assert "GET" in res.json()["message"]


def test_unexpected_exception_is_logged_and_answered_with_a_minimal_500(make_client, caplog):
    client = make_client()

    def broken():
        raise RuntimeError("secret internals /etc/shadow")

    client.services.status.all = broken
    with caplog.at_level(logging.ERROR):
        res = client.get("/stacks")
    assert res.status == 500
    assert res.json() == {"success": False, "message": "Internal error in the agent; see its log."}
    assert b"Traceback" not in res.body and b"shadow" not in res.body
    assert any("unexpected error" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ POST /action body rules


def test_action_with_a_non_json_content_type_is_415(client, world):
    res = client.request(
        "POST", "/action", body=b'{"action": "restart_stack", "stack": "prod"}', headers={"Content-Type": "text/plain"}
    )
    assert res.status == 415
    assert res.json()["success"] is False
    res = client.request(
        "POST",
        "/action",
        body=b"action=restart_stack&stack=prod",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert res.status == 415
    assert world.doubles.invocations() == []


def test_oversized_action_body_is_413(client, world):
    body = json.dumps({"action": "restart_stack", "stack": "prod", "pad": "x" * 10_000}).encode()
    res = client.request("POST", "/action", body=body, headers={"Content-Type": "application/json"})
    assert res.status == 413
    assert world.doubles.invocations() == []


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"", "Content-Length"),
        (b'["restart_stack", "prod"]', "JSON object"),
        (b'"restart_stack"', "JSON object"),
        (b'{"stack": "prod"}', "'action' is missing"),
        (b'{"action": 5, "stack": "prod"}', "'action' is missing"),
        (b'{"action": "rm_rf", "stack": "prod"}', "Unknown action"),
        (b'{"action": "exec", "stack": "prod", "command": "id"}', "Unexpected field"),
        (b'{"action": "restart_stack", "stack": "prod", "extra": 1}', "Unexpected field"),
        (b'{"action": "restart_stack"}', "'stack' is missing"),
        (b'{"action": "restart_stack", "stack": ["prod"]}', "'stack' is missing"),
        (b'{"action": "backup_site", "stack": "prod"}', "needs the field 'site'"),
        (b'{"action": "backup_site", "stack": "prod", "site": 7}', "needs the field 'site'"),
        (b'{"action": "restart_stack", "stack": "prod", "site": "site1.example.com"}', "takes no 'site'"),
    ],
)
def test_malformed_action_requests_are_400_and_run_nothing(client, world, body, words):
    res = client.request("POST", "/action", body=body, headers={"Content-Type": "application/json"})
    assert res.status == 400, res
    assert words in res.json()["message"]
    assert world.doubles.invocations() == []


def test_action_not_in_the_allow_list_is_403_naming_it(world, make_client):
    world.write_config(security={"allowed_actions": ["restart_stack", "backup_site"]})
    client = make_client()
    for action in ("stop_stack", "start_stack", "update_stack"):
        res = client.post_action(action, "prod")
        assert res.status == 403
        assert action in res.json()["message"]
    res = client.post_action("migrate_site", "prod", "site1.example.com")
    assert res.status == 403 and "migrate_site" in res.json()["message"]
    assert world.doubles.invocations() == []


def test_default_allow_list_refuses_start_and_stop(world, make_client):
    world.write_config(security={"allowed_actions": None})  # null: the default list
    client = make_client()
    assert client.post_action("stop_stack", "prod").status == 403
    assert client.post_action("start_stack", "erp").status == 403


def test_json_content_type_with_charset_is_accepted(client):
    res = client.request(
        "POST",
        "/action",
        body=b'{"action": "restart_stack", "stack": "erp"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert res.status == 202
    assert res.json()["success"] is True


def test_jobs_listing_checks_its_query(client):
    assert client.get("/jobs?limit=0").status == 400
    assert client.get("/jobs?limit=abc").status == 400
    assert client.get("/jobs?stack=nosuch").status == 404
    assert client.get("/jobs?stack=%3Bid").status == 400
    assert client.get("/jobs/not-a-job").status == 404
    assert client.get("/jobs/0123456789abcdef").status == 404
