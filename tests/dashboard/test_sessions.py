"""Server-side sessions: cookie flags, fresh id at login, logout, idle and absolute expiry."""

import sqlite3

from support.config_factory import write_config
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app


def session_cookie_header(response, name="fmsession"):
    return next(c for c in response.all("Set-Cookie") if c.startswith(name + "="))


def test_session_cookie_is_httponly_samesite_strict_path_root(client):
    header = session_cookie_header(client.login())
    assert "HttpOnly" in header
    assert "SameSite=strict" in header or "SameSite=Strict" in header
    assert "Path=/" in header
    assert "Secure" not in header  # plain http, secure_cookies auto


def test_session_cookie_is_secure_and_host_prefixed_when_the_request_came_over_https(app):
    client = WSGIClient(app, scheme="https")
    response = client.login()
    header = session_cookie_header(response, "__Host-fmsession")
    assert "Secure" in header and "Path=/" in header and "Domain" not in header
    assert not any(c.startswith("fmsession=") for c in response.all("Set-Cookie"))
    assert client.get("/dashboard").status == 200


def test_a_plain_fmsession_cookie_does_not_count_when_cookies_are_secure(app):
    # The __Host- prefix is the point: a cookie planted without it (by a sibling
    # subdomain or a plain-http page) is not a session.
    plain = WSGIClient(app)
    plain.login()
    raw = plain.cookie("fmsession")
    https = WSGIClient(app, scheme="https")
    https.cookies[("fmsession", "/")] = raw
    assert https.get("/dashboard").status == 303


def test_secure_cookies_always_sets_secure_even_over_http(tmp_path, fake_agent):
    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "secure_cookies": "always"}))
    client = WSGIClient(make_app(config))
    assert "Secure" in session_cookie_header(client.login(), "__Host-fmsession")


def test_login_issues_a_new_session_id_each_time(client):
    client.login()
    first = client.cookie("fmsession")
    client.cookies.clear()
    client.login()
    second = client.cookie("fmsession")
    assert first and second and first != second
    assert len(second) >= 43  # 32 random bytes, url-safe base64


def test_database_stores_only_a_hash_of_the_session_id(logged_in, config):
    raw = logged_in.cookie("fmsession")
    db = sqlite3.connect(f"{config['dashboard']['state_dir']}/dashboard.sqlite3")
    stored = [row[0] for row in db.execute("SELECT id_hash FROM sessions")]
    assert stored and raw not in stored


def test_logout_destroys_the_session_server_side(logged_in):
    raw = logged_in.cookie("fmsession")
    token = logged_in.page_token()
    response = logged_in.post("/logout", data={"csrf_token": token})
    assert response.status == 303 and response.header("Location") == "/login"
    assert logged_in.cookie("fmsession") is None
    # Replaying the old cookie does not work any more.
    logged_in.cookies[("fmsession", "/")] = raw
    assert logged_in.get("/dashboard").status == 303


def test_get_logout_only_offers_the_button_and_keeps_the_session(logged_in):
    # A GET must not sign out: any page (a sibling subdomain's image tag) could do it.
    page = logged_in.get("/logout")
    assert page.status == 200 and 'action="/logout"' in page.text
    assert logged_in.get("/dashboard").status == 200


def test_a_changed_password_hash_ends_existing_sessions(tmp_path, fake_agent, clock):
    import bcrypt

    first = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url}))
    client = WSGIClient(make_app(first, clock=clock))
    client.login()
    assert client.get("/dashboard").status == 200
    # Same state dir (the sessions table), the user's hash changed in config.yaml, dashboard restarted.
    new_hash = bcrypt.hashpw(b"a new password", bcrypt.gensalt(4)).decode()
    changed = load_config(
        write_config(
            tmp_path, name="changed.yaml", dashboard={"agent_url": fake_agent.url, "credentials": {"admin": new_hash}}
        )
    )
    client.app = make_app(changed, clock=clock)
    assert client.get("/dashboard").status == 303
    db = sqlite3.connect(f"{changed['dashboard']['state_dir']}/dashboard.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_a_removed_user_loses_their_sessions(tmp_path, fake_agent, clock):
    from support.config_factory import TEST_PASSWORD_HASH

    both = {"admin": TEST_PASSWORD_HASH, "ops": {"password": TEST_PASSWORD_HASH, "role": "operator"}}
    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": both}))
    client = WSGIClient(make_app(config, clock=clock))
    client.login("ops")
    assert client.get("/dashboard").status == 200
    without = load_config(write_config(tmp_path, name="without.yaml", dashboard={"agent_url": fake_agent.url}))
    client.app = make_app(without, clock=clock)
    assert client.get("/dashboard").status == 303


def test_idle_timeout_ends_the_session(logged_in, clock, config):
    idle = config["dashboard"]["session_idle_minutes"] * 60
    clock.advance(idle - 5)
    assert logged_in.get("/dashboard").status == 200  # activity resets the idle timer
    clock.advance(idle - 5)
    assert logged_in.get("/dashboard").status == 200
    clock.advance(idle + 1)
    response = logged_in.get("/dashboard")
    assert response.status == 303 and response.header("Location").startswith("/login")


def test_absolute_timeout_ends_even_an_active_session(logged_in, clock, config):
    max_seconds = config["dashboard"]["session_max_hours"] * 3600
    step = config["dashboard"]["session_idle_minutes"] * 60 - 60
    elapsed = 0
    while elapsed + step < max_seconds:
        clock.advance(step)
        elapsed += step
        assert logged_in.get("/dashboard").status == 200
    clock.advance(max_seconds - elapsed + 1)
    assert logged_in.get("/dashboard").status == 303


def test_a_made_up_session_cookie_is_not_accepted(client):
    client.cookies[("fmsession", "/")] = "made-up-value"
    assert client.get("/dashboard").status == 303
