"""Every route x method without a session: pages redirect to login with a safe next, JSON/HTMX get 401."""

import urllib.parse

import pytest

from fmappliance.dashboard.negotiation import safe_local_path

GET_ROUTES = [
    "/dashboard",
    "/stack/prod",
    "/backups/prod/site1.example.com",
    "/download/prod/site1.example.com/2026-11-25_02-00-03.sql.gz",
    "/jobs/0000000000000001",
    "/audit",
    "/logout",
    "/dashboard/host",
]
POST_ROUTES = [
    "/stack/prod/restart",
    "/stack/prod/update",
    "/site/prod/site1.example.com/restart",
    "/site/prod/site1.example.com/migrate",
    "/site/prod/site1.example.com/backup",
    "/logout",
]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_page_without_session_redirects_to_login_with_next(client, fake_agent, path):
    response = client.get(path + "?x=1")
    assert response.status == 303
    location = response.header("Location")
    assert location.startswith("/login?")
    next_path = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["next"][0]
    assert next_path == (path + "?x=1" if path != "/logout" else "/dashboard")
    assert fake_agent.requests == []


@pytest.mark.parametrize("path", GET_ROUTES)
@pytest.mark.parametrize("headers", [{"Accept": "application/json"}, {"HX-Request": "true"}])
def test_json_and_htmx_without_session_get_401(client, fake_agent, path, headers):
    response = client.get(path, headers=headers)
    assert response.status == 401
    assert fake_agent.requests == []


@pytest.mark.parametrize("path", POST_ROUTES)
def test_post_without_session_does_nothing(client, fake_agent, path):
    response = client.post(path, data={"csrf_token": "whatever"})
    assert response.status == 303
    assert response.header("Location") == "/login?next=%2Fdashboard"
    assert client.post(path, data={}, headers={"Accept": "application/json"}).status == 401
    assert client.post(path, data={}, headers={"HX-Request": "true"}).status == 401
    assert fake_agent.requests == []


@pytest.mark.parametrize(
    "value,expected",
    [
        ("/stack/prod?x=1", "/stack/prod?x=1"),
        ("//evil.example/x", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("https://evil.example/", "/dashboard"),
        ("javascript:alert(1)", "/dashboard"),
        ("/ok\r\nSet-Cookie: x", "/dashboard"),
        ("", "/dashboard"),
        (None, "/dashboard"),
        ("/login?next=/x", "/dashboard"),
    ],
)
def test_only_local_paths_are_redirect_targets(value, expected):
    assert safe_local_path(value) == expected


@pytest.mark.parametrize("path", ["/login", "/healthz", "/static/app.css", "/static/app.js", "/static/htmx.min.js"])
def test_public_routes_need_no_session(client, path):
    assert client.get(path).status == 200


def test_healthz_says_only_ok(client):
    assert client.get("/healthz").text == "ok"


def test_root_redirects_to_dashboard(client):
    response = client.get("/")
    assert response.status == 303 and response.header("Location") == "/dashboard"


def test_static_allow_list_refuses_other_files(client):
    assert client.get("/static/htmx.LICENSE").status == 404
    assert client.get("/static/..%2f..%2fconfig.py").status == 404
