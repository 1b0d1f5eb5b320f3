"""The security headers are on every response: pages, redirects, errors, static files, downloads."""

import pathlib
import re

import pytest
from support.wsgi import WSGIClient

from fmappliance.dashboard.app import make_app
from fmappliance.dashboard.security_headers import CONTENT_SECURITY_POLICY, SECURITY_HEADERS

EXPECTED_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def assert_security_headers(response):
    assert response.header("Content-Security-Policy") == EXPECTED_CSP
    assert response.header("X-Content-Type-Options") == "nosniff"
    assert response.header("Referrer-Policy") == "same-origin"
    assert response.header("X-Frame-Options") == "DENY"
    assert response.header("Cross-Origin-Opener-Policy") == "same-origin"
    assert response.header("Cross-Origin-Resource-Policy") == "same-origin"
    assert "camera=()" in response.header("Permissions-Policy")
    assert "geolocation=()" in response.header("Permissions-Policy")
    assert len(response.all("Content-Security-Policy")) == 1
    assert len(response.all("Permissions-Policy")) == 1


def test_policy_is_exactly_the_specified_one():
    assert CONTENT_SECURITY_POLICY == EXPECTED_CSP


def test_nginx_sends_the_same_headers_as_the_dashboard_and_hides_the_dashboards_copies():
    snippet = (pathlib.Path(__file__).parents[2] / "packaging/nginx/fm-security-headers.conf").read_text()
    added = dict(re.findall(r'^add_header (\S+) "([^"]*)" always;$', snippet, re.M))
    hidden = set(re.findall(r"^proxy_hide_header (\S+);$", snippet, re.M))
    for name, value in SECURITY_HEADERS:
        assert added.get(name) == value, name
        assert name in hidden, name


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/login", 200),
        ("GET", "/healthz", 200),
        ("GET", "/static/app.css", 200),
        ("GET", "/static/htmx.min.js", 200),
        ("GET", "/dashboard", 303),
        ("GET", "/no/such/page", 404),
        ("GET", "/static/nope.js", 404),
        ("DELETE", "/dashboard", 405),
    ],
)
def test_headers_without_session(client, method, path, status):
    response = client.request(method, path)
    assert response.status == status
    assert_security_headers(response)


def test_headers_on_pages_actions_and_downloads(logged_in, fake_agent):
    fake_agent.add_backup(
        "prod", "site1.example.com", "2026-11-25_02-00-03", {"2026-11-25_02-00-03.sql.gz": b"x" * 1000}
    )
    token = logged_in.page_token()
    for response, status in (
        (logged_in.get("/dashboard"), 200),
        (logged_in.get("/stack/prod"), 200),
        (logged_in.get("/backups/prod/site1.example.com"), 200),
        (logged_in.get("/audit"), 200),
        (logged_in.get("/site/prod/site1.example.com/backup"), 405),
        (logged_in.post("/stack/prod/restart", data={}), 403),
        (logged_in.post("/stack/prod/restart", data={"csrf_token": token}), 303),
        (logged_in.get("/download/prod/site1.example.com/2026-11-25_02-00-03.sql.gz"), 200),
        (logged_in.get("/download/prod/site1.example.com/2026-11-25_02-00-03.files.tar"), 404),  # from the agent
        (logged_in.get("/stack/bad name"), 400),
    ):
        assert response.status == status, (response.status, status)
        assert_security_headers(response)


class ExplodingAgent:
    """An agent client with a bug: any call raises something unexpected."""

    def __getattr__(self, name):
        def explode(*args, **kwargs):
            raise RuntimeError("secret internal detail /etc/shadow")

        return explode


def test_unexpected_exception_gives_a_minimal_500_with_headers_and_no_traceback(config, clock, caplog):
    client = WSGIClient(make_app(config, agent_client=ExplodingAgent(), clock=clock))
    client.login()
    response = client.get("/dashboard")
    assert response.status == 500
    assert_security_headers(response)
    assert "Traceback" not in response.text and "shadow" not in response.text
    assert "unexpected problem" in response.text
    # The operator finds the real cause in the log (the browser only gets the minimal answer).
    assert any(r.exc_info and "secret internal detail" in str(r.exc_info[1]) for r in caplog.records)


def test_the_500_page_is_the_dashboards_layout_with_ways_back(config, clock):
    client = WSGIClient(make_app(config, agent_client=ExplodingAgent(), clock=clock))
    client.login()
    response = client.get("/dashboard")
    assert response.status == 500
    page = response.text
    assert '<link rel="stylesheet" href="/static/app.css' in page
    assert '<nav class="nav">' in page and "Sign out (" in page
    assert '<a class="button primary" href="/dashboard">Back to the dashboard</a>' in page
    assert '<a class="button" href="/dashboard">Try this page again</a>' in page
    assert "Something went wrong" in page


def test_an_htmx_request_that_breaks_gets_a_notice_app_js_can_show(config, clock):
    client = WSGIClient(make_app(config, agent_client=ExplodingAgent(), clock=clock))
    client.login()
    response = client.get("/dashboard/host", headers={"HX-Request": "true"})
    assert response.status == 500
    assert response.text.startswith('<div class="notice notice-error"')
    assert "<html" not in response.text
