"""Roles: every role x every route (GET and POST) gets exactly what the table allows; a refusal
is a 403 with a sentence and an audit row, and executes nothing; pages show only allowed buttons."""

from __future__ import annotations

import re

import pytest
from support.config_factory import TEST_PASSWORD_HASH, write_config
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard import authorize
from fmappliance.dashboard.app import make_app

USERS = {
    "admin": TEST_PASSWORD_HASH,  # the plain-hash form: an admin
    "ops": {"password": TEST_PASSWORD_HASH, "role": "operator"},
    "view": {"password": TEST_PASSWORD_HASH, "role": "viewer"},
}
ROLE_OF = {"view": "viewer", "ops": "operator", "admin": "admin"}
RANK = {"viewer": 0, "operator": 1, "admin": 2}
SITE = "/site/prod/site1.example.com"
FILE = "/download/prod/site1.example.com/2026-11-25_02-00-03.sql.gz"
RESTORE = "/restore/prod/site1.example.com/20261125_020003"

# (method, path, body, least role).  Routes other parts of the dashboard add (restore, imports,
# logs, offsite, test restore) are covered by the table already; the fixture stands them in.
MATRIX = [
    ("GET", "/dashboard", None, "viewer"),
    ("GET", "/stack/prod", None, "viewer"),
    ("GET", "/backups/prod/site1.example.com", None, "viewer"),
    ("GET", "/jobs/0000000000000001", None, "viewer"),
    ("GET", "/audit", None, "viewer"),
    ("GET", "/scheduler", None, "viewer"),
    ("GET", "/account", None, "viewer"),
    # A frontend's log can show reset links and session ids: operators, unless dashboard.viewer_logs.
    ("GET", "/stack/prod/logs", None, "operator"),
    ("GET", "/stack/prod/logs/stream", None, "operator"),
    ("GET", FILE, None, "operator"),
    ("HEAD", FILE, None, "operator"),
    ("POST", "/stack/prod/restart", {}, "operator"),
    ("POST", SITE + "/backup", {}, "operator"),
    ("POST", SITE + "/restart", {}, "operator"),
    ("POST", SITE + "/migrate", {}, "operator"),
    ("POST", SITE + "/test_restore", {}, "operator"),
    ("GET", RESTORE, None, "operator"),
    ("POST", RESTORE, {"create_site": "1", "target_stack": "prod", "target_site": "new.example.com"}, "operator"),
    ("POST", RESTORE, {"target_stack": "prod", "target_site": "site1.example.com"}, "admin"),
    ("POST", "/stack/prod/update", {}, "admin"),
    ("POST", "/scheduler/add", {"stack": "prod", "site": "*", "frequency": "daily", "time": "03:00"}, "admin"),
    ("POST", "/scheduler/remove/1", {}, "admin"),
    ("POST", "/scheduler/disable/1", {}, "admin"),
    ("GET", "/imports", None, "admin"),
    ("POST", "/imports", {"name": "x"}, "admin"),
    ("GET", "/offsite", None, "admin"),
    ("GET", "/account/users", None, "admin"),
    ("POST", "/account/users/ops/reset-2fa", {}, "admin"),
]


STAND_INS = [
    ("GET", "/stack/<name>/logs"),
    ("GET", "/stack/<name>/logs/stream"),
    ("POST", "/site/<stack>/<site>/test_restore"),
    ("GET", "/restore/<stack>/<site>/<id>"),
    ("POST", "/restore/<stack>/<site>/<id>"),
    ("GET", "/imports"),
    ("POST", "/imports"),
    ("GET", "/offsite"),
    ("GET", "/metrics"),
]


@pytest.fixture
def app(tmp_path, fake_agent, clock):
    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS}))
    app = make_app(config, clock=clock)
    for method, rule in STAND_INS:
        if not any(r.rule == rule and r.method == method for r in app.routes):
            app.route(rule, method=method, callback=lambda **kw: "stand-in reached")
    return app


def signed_in(app, user):
    client = WSGIClient(app)
    assert client.login(user).status == 303
    return client


def send(client, method, path, body, *, json_answer=False):
    headers = {"Accept": "application/json"} if json_answer else {}
    if method == "POST":
        token = client.page_token("/account")
        return client.post(path, data={**body, "csrf_token": token}, headers=headers)
    return client.request(method, path, headers=headers)


@pytest.mark.parametrize("user", ["view", "ops", "admin"])
@pytest.mark.parametrize("method,path,body,least", MATRIX, ids=[f"{m} {p} {b or ''} {r}" for m, p, b, r in MATRIX])
def test_every_role_gets_exactly_what_the_table_allows(app, fake_agent, user, method, path, body, least):
    client = signed_in(app, user)
    schedules_before = len(app.ctx.scheduler.store.list())
    fake_agent.requests.clear()
    response = send(client, method, path, body)
    allowed = RANK[ROLE_OF[user]] >= RANK[least]
    if allowed:
        assert response.status not in (401, 403), (response.status, response.text[:300])
        if method == "POST" and response.text == "stand-in reached":
            assert response.status == 200
    else:
        assert response.status == 403, (response.status, response.text[:300])
        if method != "HEAD":
            assert "Your role" in response.text and "needs " + least in response.text
        # Nothing executed: the agent heard nothing, no schedule appeared.
        assert fake_agent.requests == []
        if schedules_before is not None:
            assert len(app.ctx.scheduler.store.list()) == schedules_before
        row = app.ctx.audit.recent(1)[0]
        assert (row["user"], row["action"], row["target"]) == (user, "refused", f"{method} {path}")


@pytest.mark.parametrize("user", ["view", "ops"])
def test_json_refusals_are_403_with_a_sentence(app, user):
    client = signed_in(app, user)
    response = send(client, "POST", "/stack/prod/update", {}, json_answer=True)
    assert response.status == 403
    assert response.json() == {
        "success": False,
        "message": f"Your role ({ROLE_OF[user]}) may not do this; it needs admin.",
    }


def test_restore_over_an_existing_site_asks_an_admin_for_a_fresh_confirmation(app, clock):
    admin = signed_in(app, "admin")
    clock.advance(6 * 60)
    token = admin.page_token("/account")
    over = admin.post(
        RESTORE,
        json={"target_stack": "prod", "target_site": "site1.example.com"},
        headers={"Accept": "application/json", "X-CSRF-Token": token},
    )
    assert over.status == 401 and over.json()["step_up"] is True
    # Onto a new site needs no step-up.
    new = admin.post(
        RESTORE,
        json={"create_site": True, "target_stack": "prod", "target_site": "new.example.com"},
        headers={"Accept": "application/json", "X-CSRF-Token": token},
    )
    assert new.status == 200 and new.text == "stand-in reached"


def test_without_a_second_factor_step_up_asks_for_the_password(app, clock, fake_agent):
    admin = signed_in(app, "admin")
    clock.advance(6 * 60)
    token = admin.page_token("/account")
    asked = admin.post("/stack/prod/update", data={"csrf_token": token, "return_to": "/dashboard"})
    assert asked.header("Location") == "/account/verify?next=%2Fdashboard"
    assert 'name="password"' in admin.get(asked.header("Location")).text
    assert (
        admin.post("/account/verify", data={"csrf_token": token, "password": "wrong", "next": "/dashboard"}).status
        == 401
    )
    from support.config_factory import TEST_PASSWORD

    ok = admin.post("/account/verify", data={"csrf_token": token, "password": TEST_PASSWORD, "next": "/dashboard"})
    assert ok.status == 303 and ok.header("Location") == "/dashboard"
    assert admin.post("/stack/prod/update", data={"csrf_token": token}).status == 303
    assert [r for r in fake_agent.requests if r[0] == "POST"]


def test_metrics_stays_outside_sessions(app):
    # Not a redirect to the sign-in page: /metrics has its own scrape token (none configured here: 404).
    response = WSGIClient(app).get("/metrics")
    assert response.status == 404
    assert response.header("Location") is None


def test_a_post_route_missing_from_the_table_is_refused_for_everyone(app, fake_agent):
    ran = []

    @app.post("/unlisted/thing")
    def unlisted():
        ran.append(True)
        return "done"

    client = signed_in(app, "admin")
    token = client.page_token("/account")
    response = client.post("/unlisted/thing", data={"csrf_token": token})
    assert response.status == 403 and "not allowed for anyone" in response.text
    assert ran == []


def test_every_registered_route_has_a_line_in_the_table(app):
    sample = {
        "name": "prod",
        "stack": "prod",
        "site": "site1.example.com",
        "file": "a.sql.gz",
        "job_id": "1",
        "schedule_id": "1",
        "verb": None,
        "id": "1",
        "user": "ops",
    }
    for route in app.routes:
        for path in _sample_paths(route.rule, sample):
            found = authorize.find_rule(route.method, path)
            # A GET without its own line is a viewer page; a POST without one is refused to all.
            assert found is not None, f"{route.method} {route.rule} has no line in authorize.RULES"
            assert found is not authorize.DEFAULT_GET, f"{route.method} {route.rule} should have its own line"


def _sample_paths(rule: str, sample: dict) -> list[str]:
    """Concrete paths for a bottle rule; a <verb:re:a|b> wildcard yields one path per choice."""
    paths = [""]
    for literal, wildcard in re.findall(r"([^<]*)(?:<([^>]+)>)?", rule):
        paths = [p + literal for p in paths]
        if wildcard:
            name, _, spec = wildcard.partition(":")
            if spec.startswith("re:"):
                choices = spec[3:].split("|")
            else:
                choices = [sample.get(name) or "x"]
            paths = [p + c for p in paths for c in choices]
    return sorted(set(paths))


def test_pages_show_only_the_buttons_a_role_may_use(app, fake_agent):
    fake_agent.add_backup("prod", "site1.example.com", "2026-11-25_02-00-03", {"2026-11-25_02-00-03.sql.gz": b"x"})
    view, ops, admin = (signed_in(app, u) for u in ("view", "ops", "admin"))
    for client, restart, update, backup in (
        (view, False, False, False),
        (ops, True, False, True),
        (admin, True, True, True),
    ):
        page = client.get("/dashboard").text
        assert ('hx-post="/stack/prod/restart"' in page) is restart
        assert ('formaction="/stack/prod/update"' in page) is update
        assert ('action="/site/prod/site1.example.com/backup"' in page) is backup
    backups = "/backups/prod/site1.example.com"
    assert 'href="/download/' not in view.get(backups).text and "2026-11-25_02-00-03.sql.gz" in view.get(backups).text
    assert 'href="/download/' in ops.get(backups).text
    assert 'action="/site/prod/site1.example.com/backup"' not in view.get(backups).text
    assert 'action="/scheduler/add"' not in view.get("/scheduler").text
    assert 'action="/scheduler/add"' not in ops.get("/scheduler").text
    assert 'action="/scheduler/add"' in admin.get("/scheduler").text
    assert 'class="restore-link"' not in view.get(backups).text
    assert 'class="restore-link"' in ops.get(backups).text
    assert 'href="/imports"' not in ops.get("/account").text
    assert 'href="/imports"' in admin.get("/account").text
    assert 'href="/account/users"' in admin.get("/account").text
    assert 'href="/account/users"' not in ops.get("/account").text
    # Live logs are an operator's (dashboard.viewer_logs is off): a viewer is not shown links that would 403.
    assert "/stack/prod/logs" not in view.get("/stack/prod").text
    assert 'href="/stack/prod/logs"' in ops.get("/stack/prod").text
    assert 'href="/stack/prod/logs?service=' in ops.get("/stack/prod").text


def test_a_bare_hash_is_an_admin_and_roles_come_from_the_mapping(app):
    assert {name: role for name, (_, role) in app.ctx.users.items()} == ROLE_OF


def test_an_unknown_role_is_a_config_error(tmp_path):
    from fmappliance.config import ConfigError

    with pytest.raises(ConfigError, match="role must be one of: viewer, operator, admin"):
        load_config(
            write_config(tmp_path, dashboard={"credentials": {"x": {"password": TEST_PASSWORD_HASH, "role": "root"}}})
        )


def test_htmx_step_up_is_a_full_page_redirect_to_the_confirmation(app, clock, fake_agent):
    admin = signed_in(app, "admin")
    clock.advance(6 * 60)
    token = admin.page_token("/account")
    answer = admin.post(
        "/stack/prod/update",
        data={"csrf_token": token, "return_to": "/stack/prod"},
        headers={"HX-Request": "true"},
    )
    assert answer.status == 200
    assert answer.header("HX-Redirect") == "/account/verify?next=%2Fstack%2Fprod"
    assert [r for r in fake_agent.requests if r[0] == "POST"] == []


def test_resetting_an_unknown_user_is_a_404_with_a_sentence(app):
    admin = signed_in(app, "admin")
    token = admin.page_token("/account")
    answer = admin.post("/account/users/nobody/reset-2fa", data={"csrf_token": token})
    assert answer.status == 404 and "no such user" in answer.text


OFFSITE_BACKUP = "2026-11-25_02-00-03"
OFFSITE_RESTORE = f"/restore/prod/site1.example.com/{OFFSITE_BACKUP}?source=offsite"


@pytest.fixture
def real_app(tmp_path, fake_agent, clock):
    """The dashboard with its own restore pages (no stand-ins): the request reaches the agent when allowed."""
    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS}))
    return make_app(config, clock=clock)


def offsite_copy_listed(fake_agent) -> None:
    fake_agent.offsite = {
        ("prod", "site1.example.com"): [
            {
                "id": "ab12cd34",
                "backup": OFFSITE_BACKUP,
                "created": "2026-11-25T02:00:03Z",
                "size": 5000,
                "files": [{"name": f"{OFFSITE_BACKUP}.sql.gz", "size": 5000, "sha256": "0" * 64}],
            }
        ]
    }


def restore_requests(fake_agent) -> list[dict]:
    return [body for method, path, body in fake_agent.requests if method == "POST" and path == "/action"]


def test_offsite_restore_links_show_only_to_roles_that_may_restore(real_app, fake_agent):
    offsite_copy_listed(fake_agent)
    backups = "/backups/prod/site1.example.com"
    view, ops = signed_in(real_app, "view"), signed_in(real_app, "ops")
    assert f'data-offsite-backup="{OFFSITE_BACKUP}"' in view.get(backups).text
    assert "?source=offsite" not in view.get(backups).text
    assert f'href="{OFFSITE_RESTORE}"' in ops.get(backups).text
    assert view.get(OFFSITE_RESTORE).status == 403
    assert ops.get(OFFSITE_RESTORE).status == 200


def test_an_operator_restores_an_offsite_copy_onto_a_new_site_only(real_app, fake_agent):
    offsite_copy_listed(fake_agent)
    ops = signed_in(real_app, "ops")
    token = ops.page_token("/account")
    fake_agent.requests.clear()
    over = ops.post(
        OFFSITE_RESTORE,
        data={
            "csrf_token": token,
            "target_stack": "prod",
            "target_site": "site1.example.com",
            "confirm": "site1.example.com",
        },
    )
    assert over.status == 403 and "needs admin" in over.text
    assert restore_requests(fake_agent) == []
    row = real_app.ctx.audit.recent(1)[0]
    assert (row["user"], row["action"]) == ("ops", "refused")
    new = ops.post(
        OFFSITE_RESTORE,
        data={
            "csrf_token": token,
            "create_site": "1",
            "target_stack": "prod",
            "target_site": "new.example.com",
            "confirm": "new.example.com",
        },
    )
    assert new.status == 303, new.text[:300]
    sent = restore_requests(fake_agent)
    assert len(sent) == 1 and sent[0]["source"] == "offsite" and sent[0]["create_site"] is True


def test_an_offsite_restore_over_an_existing_site_asks_an_admin_for_a_fresh_confirmation(real_app, clock, fake_agent):
    offsite_copy_listed(fake_agent)
    admin = signed_in(real_app, "admin")
    clock.advance(6 * 60)
    token = admin.page_token("/account")
    fake_agent.requests.clear()
    over = admin.post(
        OFFSITE_RESTORE,
        json={"target_stack": "prod", "target_site": "site1.example.com", "confirm": "site1.example.com"},
        headers={"Accept": "application/json", "X-CSRF-Token": token},
    )
    assert over.status == 401 and over.json()["step_up"] is True
    assert restore_requests(fake_agent) == []


def test_viewer_logs_lets_viewers_follow_live_logs(tmp_path, fake_agent, clock):
    config = load_config(
        write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS, "viewer_logs": True})
    )
    app = make_app(config, clock=clock)
    viewer = signed_in(app, "view")
    assert viewer.get("/stack/prod/logs").status == 200
    assert viewer.get("/stack/prod/logs/stream?service=x y").status == 400  # reached the route, refused there
