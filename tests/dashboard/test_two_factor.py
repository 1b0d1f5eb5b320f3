"""The second sign-in factor: enrollment, sign-in with a code, replay, recovery codes,
throttling, resets (UI and command line) and step-up confirmation."""

from __future__ import annotations

import html
import os
import re
import stat
import subprocess
import sys
import urllib.parse

import pyotp
import pytest
from support.config_factory import TEST_PASSWORD_HASH, write_config
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app

USERS = {
    "admin": TEST_PASSWORD_HASH,
    "ops": {"password": TEST_PASSWORD_HASH, "role": "operator"},
    "view": {"password": TEST_PASSWORD_HASH, "role": "viewer"},
}
UPDATE = "/stack/prod/update"


@pytest.fixture
def config_path(tmp_path, fake_agent):
    return write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS, "totp": "required"})


@pytest.fixture
def app(config_path, clock):
    return make_app(load_config(config_path), clock=clock)


def new_client(app):
    return WSGIClient(app)


def agent_posts(agent):
    return [r for r in agent.requests if r[0] == "POST"]


def secret_of(page_text: str) -> str:
    key = re.search(r'<code class="totp-key">([A-Z2-7 ]+)</code>', page_text)
    assert key, "the enrollment page shows no key"
    return key.group(1).replace(" ", "")


def enroll(client, clock, user="admin") -> tuple[str, list[str]]:
    """Sign in with the password, set up the app's secret; returns (secret, recovery codes)."""
    response = client.login(user)
    assert response.status == 303 and response.header("Location").startswith("/account/2fa"), response.text
    page = client.get(response.header("Location"))
    secret = secret_of(page.text)
    done = client.post("/account/2fa", data={"csrf_token": page.csrf_token(), "code": pyotp.TOTP(secret).at(clock.now)})
    assert done.status == 200, done.text
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    return secret, codes


def code_step(client, code: str):
    page = client.get("/login/code")
    assert page.status == 200, page.text
    return client.post("/login/code", data={"csrf_token": page.csrf_token(), "code": code})


def asks_for_a_code(response) -> bool:
    return response.status == 200 and 'action="/login/code"' in response.text


def sign_in_with_code(client, clock, secret, user="admin"):
    response = client.login(user)
    assert asks_for_a_code(response), response.text
    return client.post(
        "/login/code", data={"csrf_token": response.csrf_token(), "code": pyotp.TOTP(secret).at(clock.now)}
    )


def test_required_enrollment_comes_right_after_the_password_and_blocks_everything_else(app, clock, fake_agent):
    client = new_client(app)
    response = client.login("admin", next_path="/stack/prod")
    assert response.status == 303
    assert response.header("Location") == "/account/2fa?" + urllib.parse.urlencode({"next": "/stack/prod"})
    # Nothing else until done: pages lead back, JSON and actions are refused, the agent hears nothing.
    assert client.get("/dashboard").header("Location").startswith("/account/2fa")
    assert client.get("/dashboard", headers={"Accept": "application/json"}).status == 403
    token = client.get("/account/2fa").csrf_token()
    assert client.post("/site/prod/site1.example.com/backup", data={"csrf_token": token}).status == 403
    assert agent_posts(fake_agent) == []

    page = client.get("/account/2fa")
    assert re.search(r'<img class="qr" src="data:image/svg\+xml', page.text)
    secret = secret_of(page.text)
    assert secret_of(client.get("/account/2fa").text) == secret  # a reload shows the same key

    wrong = client.post(
        "/account/2fa",
        data={"csrf_token": token, "code": "000000" if pyotp.TOTP(secret).at(clock.now) != "000000" else "111111"},
    )
    assert wrong.status == 400
    done = client.post(
        "/account/2fa", data={"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now), "next": "/stack/prod"}
    )
    assert done.status == 200
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert client.get("/dashboard").status == 200


def test_secrets_and_recovery_codes_are_stored_in_a_0600_database_and_codes_only_as_hashes(app, clock, config_path):
    import sqlite3

    client = new_client(app)
    _, codes = enroll(client, clock)
    config = load_config(config_path)
    path = os.path.join(config["dashboard"]["state_dir"], "dashboard.sqlite3")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    dump = "\n".join(sqlite3.connect(path).iterdump())
    assert not any(code in dump or code.replace("-", "") in dump for code in codes)


def test_sign_in_with_a_code_creates_the_session_only_after_the_second_step(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    response = client.login("admin", next_path="/audit")
    assert asks_for_a_code(response)
    assert client.cookie("fmsession") is None
    assert client.get("/dashboard").status == 303  # no session yet
    done = code_step(client, pyotp.TOTP(secret).at(clock.now))
    assert done.status == 303 and done.header("Location") == "/audit"
    assert client.get("/dashboard").status == 200


def test_a_code_is_accepted_once_a_replay_is_refused(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    code = pyotp.TOTP(secret).at(clock.now)
    first = new_client(app)
    assert sign_in_with_code(first, clock, secret).status == 303
    second = new_client(app)
    second.login("admin")
    replay = code_step(second, code)
    assert replay.status == 401
    assert second.cookie("fmsession") is None
    # The code used at enrollment is spent too, and an older code never comes back.
    clock.advance(30)
    assert code_step(second, pyotp.TOTP(secret).at(clock.now - 60)).status == 401
    assert code_step(second, pyotp.TOTP(secret).at(clock.now)).status == 303


def test_a_code_from_one_step_either_side_is_accepted_for_clock_skew(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(120)
    client = new_client(app)
    client.login("admin")
    assert code_step(client, pyotp.TOTP(secret).at(clock.now + 30)).status == 303
    clock.advance(120)
    late = new_client(app)
    late.login("admin")
    assert code_step(late, pyotp.TOTP(secret).at(clock.now - 60)).status == 401  # two steps old: refused


def test_a_recovery_code_signs_in_once(app, clock):
    _, codes = enroll(new_client(app), clock)
    client = new_client(app)
    client.login("admin")
    assert code_step(client, codes[3].upper()).status == 303  # case and dashes do not matter
    again = new_client(app)
    again.login("admin")
    assert code_step(again, codes[3]).status == 401
    assert code_step(again, codes[4].replace("-", "")).status == 303


def test_wrong_codes_are_throttled_like_passwords_and_audited_as_one_row(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    client.login("admin")
    right = pyotp.TOTP(secret).at(clock.now)
    wrong = "123456" if right != "123456" else "654321"
    for _ in range(4):
        assert code_step(client, wrong).status == 401
    assert code_step(client, wrong).status == 401  # the fifth ends this pending sign-in
    # The password again (from another address: the password step of this one is throttled too)...
    assert asks_for_a_code(client.login("admin", remote_addr="198.51.100.77"))
    # ...but the account's wrong codes count whatever the address.
    throttled = client.post(
        "/login/code",
        data={"csrf_token": client.get("/login/code").csrf_token(), "code": right},
        remote_addr="198.51.100.77",
    )
    assert throttled.status == 429 and int(throttled.header("Retry-After")) > 0
    assert client.cookie("fmsession") is None
    rows = [
        (r["result"], r["count"])
        for r in app.ctx.audit.recent()
        if r["action"] == "login" and r["result"] != "ok, second factor to set up"
    ]
    assert ("failed: wrong code", 5) in rows and ("throttled", 1) in rows


def test_the_code_step_needs_a_pending_password_step(app, clock):
    enroll(new_client(app), clock)
    client = new_client(app)
    assert client.get("/login/code").status == 303
    client.cookies[("fmpending", "/login")] = "made-up"
    token = client.get("/login").csrf_token()
    assert client.post("/login/code", data={"csrf_token": token, "code": "123456"}).status == 403
    assert client.cookie("fmsession") is None


def test_an_admin_resets_another_users_second_factor_and_their_sessions_end(app, clock):
    admin = new_client(app)
    enroll(admin, clock)
    ops = new_client(app)
    enroll(ops, clock, "ops")
    assert ops.get("/dashboard").status == 200
    users = admin.get("/account/users")
    assert users.status == 200 and 'data-user="ops"' in users.text
    reset = admin.post("/account/users/ops/reset-2fa", data={"csrf_token": users.csrf_token()})
    assert reset.status == 303
    assert ops.get("/dashboard").status == 303  # signed out at once
    response = ops.login("ops")
    assert response.header("Location").startswith("/account/2fa")  # enrolls again
    row = app.ctx.audit.recent(5)
    assert any(r["action"] == "reset_2fa" and r["target"] == "ops" and r["user"] == "admin" for r in row)


def test_viewers_and_operators_cannot_reach_the_users_page_or_reset(app, clock):
    for user in ("view", "ops"):
        client = new_client(app)
        enroll(client, clock, user)
        assert client.get("/account/users").status == 403
        token = client.page_token("/account")
        assert client.post("/account/users/admin/reset-2fa", data={"csrf_token": token}).status == 403
    # Nothing was reset: both still have their second factor.
    assert (
        app.ctx.second_factors.enrollment("ops") is not None and app.ctx.second_factors.enrollment("view") is not None
    )


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_the_command_line_reset_takes_effect_without_a_restart(app, clock, config_path):
    ops = new_client(app)
    enroll(ops, clock, "ops")
    assert ops.get("/dashboard").status == 200
    result = subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(config_path), "reset-2fa", "ops"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "reset" in result.stdout
    # The same running app: the session is gone and the next sign-in enrolls again.
    assert ops.get("/dashboard").status == 303
    assert ops.login("ops").header("Location").startswith("/account/2fa")


@pytest.mark.slow  # starts a process (tests/conftest.py)
def test_the_command_line_reset_refuses_an_unknown_user(config_path):
    result = subprocess.run(
        [sys.executable, "-m", "fmappliance.dashboard", "--config", str(config_path), "reset-2fa", "nobody"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "no user 'nobody'" in result.stderr


def test_step_up_is_asked_after_five_minutes_and_honoured_after_a_fresh_code(app, clock, fake_agent):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    assert sign_in_with_code(client, clock, secret).status == 303
    token = client.page_token()
    clock.advance(6 * 60)
    # JSON: 401 with step_up, nothing sent to the agent.
    answer = client.post(UPDATE, json={}, headers={"Accept": "application/json", "X-CSRF-Token": token})
    assert answer.status == 401
    assert answer.json()["success"] is False and answer.json()["step_up"] is True and answer.json()["message"]
    # A page form: sent to /account/verify with the page to come back to.
    page = client.post(UPDATE, data={"csrf_token": token, "return_to": "/stack/prod"})
    assert page.status == 303
    assert page.header("Location") == "/account/verify?" + urllib.parse.urlencode({"next": "/stack/prod"})
    assert agent_posts(fake_agent) == []
    form = client.get(page.header("Location"))
    assert 'name="code"' in form.text
    confirmed = client.post(
        "/account/verify", data={"csrf_token": token, "code": pyotp.TOTP(secret).at(clock.now), "next": "/stack/prod"}
    )
    assert confirmed.status == 303 and confirmed.header("Location") == "/stack/prod"
    again = client.post(UPDATE, json={}, headers={"Accept": "application/json", "X-CSRF-Token": token})
    assert again.status == 202, again.text
    assert [r for r in agent_posts(fake_agent) if r[1] == "/action"]


def test_step_up_refuses_a_wrong_or_replayed_code(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    sign_in_with_code(client, clock, secret)
    used = pyotp.TOTP(secret).at(clock.now)
    token = client.page_token()
    clock.advance(6 * 60)
    assert client.post("/account/verify", data={"csrf_token": token, "code": used}).status == 401
    assert client.post(UPDATE, json={}, headers={"Accept": "application/json", "X-CSRF-Token": token}).status == 401


def test_resetting_someones_second_factor_needs_a_fresh_code(app, clock):
    secret, _ = enroll(new_client(app), clock)
    enroll(new_client(app), clock, "ops")
    clock.advance(30)
    admin = new_client(app)
    sign_in_with_code(admin, clock, secret)
    token = admin.page_token()
    clock.advance(6 * 60)
    answer = admin.post("/account/users/ops/reset-2fa", data={"csrf_token": token})
    assert answer.status == 303 and answer.header("Location").startswith("/account/verify?")
    assert app.ctx.second_factors.enrollment("ops") is not None


def test_optional_mode_lets_users_sign_in_without_and_enroll_from_account(tmp_path, fake_agent, clock):
    config = load_config(
        write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS, "totp": "optional"})
    )
    app = make_app(config, clock=clock)
    client = new_client(app)
    assert client.login("ops").header("Location") == "/dashboard"
    account = client.get("/account")
    assert 'href="/account/2fa"' in account.text
    page = client.get("/account/2fa")
    secret = secret_of(page.text)
    assert (
        client.post(
            "/account/2fa", data={"csrf_token": page.csrf_token(), "code": pyotp.TOTP(secret).at(clock.now)}
        ).status
        == 200
    )
    clock.advance(30)
    later = new_client(app)
    assert asks_for_a_code(later.login("ops"))


def test_totp_off_in_yaml_means_off(tmp_path, fake_agent):
    path = write_config(tmp_path, dashboard={"agent_url": fake_agent.url})
    text = path.read_text().replace("totp: 'off'", "totp: off")
    assert "totp: off" in text
    path.write_text(text)
    assert load_config(path)["dashboard"]["totp"] == "off"


def test_the_qr_code_encodes_the_key_shown_as_text(app, clock):
    import segno

    from fmappliance.dashboard.second_factor import provisioning_uri

    client = new_client(app)
    client.login("admin")
    page = client.get("/account/2fa")
    secret = secret_of(page.text)
    src = html.unescape(re.search(r'<img class="qr" src="([^"]+)"', page.text).group(1))
    assert src == segno.make(provisioning_uri(secret, "admin"), error="m").svg_data_uri(scale=5, border=2)


def test_switching_totp_away_from_required_releases_a_session_waiting_to_enroll(tmp_path, fake_agent, clock):
    required = load_config(
        write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": USERS, "totp": "required"})
    )
    client = WSGIClient(make_app(required, clock=clock))
    client.login("ops")
    assert client.get("/dashboard").status == 303
    optional = load_config(
        write_config(
            tmp_path,
            name="optional.yaml",
            dashboard={"agent_url": fake_agent.url, "credentials": USERS, "totp": "optional"},
        )
    )
    client.app = make_app(optional, clock=clock)
    assert client.get("/dashboard").status == 200


def test_no_secret_or_code_reaches_the_audit_log_or_the_logs(app, clock, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    client = new_client(app)
    secret, codes = enroll(client, clock)
    clock.advance(30)
    sign_in_with_code(new_client(app), clock, secret)
    recovery = new_client(app)
    recovery.login("admin")
    code_step(recovery, codes[0])
    rows = " ".join(str(v) for r in app.ctx.audit.recent() for v in r.values())
    for text in (rows, caplog.text):
        assert secret not in text
        assert not any(code in text for code in codes)
        assert pyotp.TOTP(secret).at(clock.now) not in text


def test_five_wrong_codes_end_the_pending_sign_in_and_ask_for_the_password_again(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    client.login("admin")
    right = pyotp.TOTP(secret).at(clock.now)
    wrong = "123456" if right != "123456" else "654321"
    for _ in range(4):
        assert code_step(client, wrong).status == 401
    fifth = code_step(client, wrong)
    assert fifth.status == 401
    assert "Too many wrong codes for this sign-in; enter your password again" in fifth.text
    assert 'action="/login/code"' not in fifth.text and 'name="password"' in fifth.text
    assert client.cookie("fmpending") is None
    # The right code no longer finishes that sign-in.
    assert client.get("/login/code").status == 303


def test_wrong_codes_from_200_addresses_on_one_pending_sign_in_are_refused_after_the_limit(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    assert asks_for_a_code(client.login("admin", remote_addr="192.0.2.1"))
    token = client.get("/login/code").csrf_token()
    right = pyotp.TOTP(secret).at(clock.now)
    wrong = "123456" if right != "123456" else "654321"
    statuses = [
        client.post("/login/code", data={"csrf_token": token, "code": wrong}, remote_addr=f"2001:db8:{i:x}::1").status
        for i in range(200)
    ]
    assert statuses.count(401) == 5
    assert set(statuses[5:]) <= {403, 429}
    # A new pending sign-in (the password again, from yet another address) gets no fresh guesses.
    fresh = new_client(app)
    answer = fresh.login("admin", remote_addr="203.0.113.200")
    assert asks_for_a_code(answer)
    guess = fresh.post(
        "/login/code", data={"csrf_token": answer.csrf_token(), "code": wrong}, remote_addr="203.0.113.201"
    )
    assert guess.status == 429 and int(guess.header("Retry-After")) > 0


def test_step_up_codes_count_per_account_whatever_the_address(app, clock):
    secret, _ = enroll(new_client(app), clock)
    clock.advance(30)
    client = new_client(app)
    sign_in_with_code(client, clock, secret)
    token = client.page_token()
    clock.advance(6 * 60)
    right = pyotp.TOTP(secret).at(clock.now)
    wrong = "123456" if right != "123456" else "654321"
    statuses = [
        client.post("/account/verify", data={"csrf_token": token, "code": wrong}, remote_addr=f"198.51.100.{i}").status
        for i in range(20)
    ]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    assert (
        client.post("/account/verify", data={"csrf_token": token, "code": right}, remote_addr="192.0.2.99").status
        == 429
    )


def test_a_pending_enrollment_secret_belongs_to_the_session_that_asked_for_it(app, clock):
    first = new_client(app)
    page = first.get(first.login("admin").header("Location"))
    secret = secret_of(page.text)
    # Someone else with the password, during that enrollment, gets neither the key nor a way to confirm it.
    second = new_client(app)
    other_page = second.get(second.login("admin").header("Location"))
    assert secret_of(other_page.text) != secret
    code = pyotp.TOTP(secret).at(clock.now)
    stolen = second.post("/account/2fa", data={"csrf_token": other_page.csrf_token(), "code": code})
    assert stolen.status == 400 and app.ctx.second_factors.enrollment("admin") is None
    # The session that was shown the key still finishes with it, and a reload showed the same key.
    assert secret_of(first.get("/account/2fa").text) == secret
    done = first.post("/account/2fa", data={"csrf_token": page.csrf_token(), "code": code})
    assert done.status == 200 and app.ctx.second_factors.enrollment("admin") is not None


def test_the_recovery_codes_page_offers_a_download_a_copy_and_an_i_saved_them_step(app, clock):
    client = new_client(app)
    response = client.login("admin", next_path="/audit?action=login")
    assert response.header("Location").startswith("/account/2fa")
    page = client.get(response.header("Location"))
    done = client.post(
        "/account/2fa",
        data={
            "csrf_token": page.csrf_token(),
            "code": pyotp.TOTP(secret_of(page.text)).at(clock.now),
            "next": html.unescape(re.search(r'name="next" value="([^"]*)"', page.text).group(1)),
        },
    )
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.text)
    assert len(codes) == 10
    link = re.search(r'<a class="button" href="(data:text/plain;charset=utf-8,[^"]+)" download="([^"]+)">', done.text)
    assert link and link.group(2) == "fmappliance-recovery-codes-admin.txt"
    text = urllib.parse.unquote(html.unescape(link.group(1)).split(",", 1)[1])
    assert all(code in text.splitlines() for code in codes)
    assert '<button type="button" data-copy="recovery-codes-text">Copy them</button>' in done.text
    # Continue only after ticking "I have saved these codes", to where the sign-in was going.
    form = re.search(r'<form method="get"[^>]*>', done.text)
    assert form and form.group(0) == (
        '<form method="get" action="/audit" class="codes-saved" data-next="/audit?action=login">'
    )

    assert '<input type="hidden" name="action" value="login">' in done.text
    assert '<input type="checkbox" id="codes-saved" required>' in done.text
