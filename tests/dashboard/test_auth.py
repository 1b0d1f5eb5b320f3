"""Sign-in: same answer for unknown users and wrong passwords, the 72-byte rule,
throttling per account and per address, safe redirects, audit rows."""

import re

import pytest
from support.config_factory import TEST_PASSWORD, TEST_USER

WRONG = "Wrong user name or password."


def test_correct_password_signs_in_and_lands_on_the_dashboard(client):
    response = client.login()
    assert response.status == 303
    assert response.header("Location") == "/dashboard"
    assert client.get("/dashboard").status == 200


def test_unknown_user_and_wrong_password_get_the_same_answer(client):
    unknown = client.login("nobody", TEST_PASSWORD)
    wrong = client.login(TEST_USER, "not the password")
    assert unknown.status == wrong.status == 401
    assert WRONG in unknown.text and WRONG in wrong.text
    assert client.cookie("fmsession") is None


def test_unknown_user_still_runs_a_bcrypt_check(app, monkeypatch):
    import bcrypt

    calls = []
    real = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda pw, h: calls.append(h) or real(pw, h))
    assert app.ctx.passwords.check("nobody", "whatever") is False
    assert len(calls) == 1


def test_password_over_72_bytes_is_refused_with_a_clear_message_not_a_500(client):
    response = client.login(TEST_USER, "€" * 25)  # 75 bytes in UTF-8
    assert response.status == 400
    assert "limited to 72 bytes" in response.text
    assert client.cookie("fmsession") is None


def test_login_without_the_form_token_is_refused(client):
    client.get("/login")
    response = client.post("/login", data={"username": TEST_USER, "password": TEST_PASSWORD})
    assert response.status == 403
    assert client.cookie("fmsession") is None


def test_login_from_another_site_is_refused_even_with_a_token(client):
    token = client.get("/login").csrf_token()
    response = client.post(
        "/login",
        data={"username": TEST_USER, "password": TEST_PASSWORD, "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status == 403
    assert client.cookie("fmsession") is None


def test_failures_from_many_addresses_never_lock_out_the_right_password_from_a_clean_address(client):
    # Someone fails on purpose from many addresses, as often as the throttle lets them...
    for _round in range(3):
        for i in range(6):
            client.login(TEST_USER, "wrong", remote_addr=f"198.51.100.{i}")
    # ...the account-wide count slows those addresses down...
    response = client.login(TEST_USER, "wrong", remote_addr="198.51.100.0")
    assert response.status == 429
    assert int(response.header("Retry-After")) > 0
    # ...but the owner, from an address without failures, still signs in.
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="203.0.113.50").status == 303
    assert client.cookie("fmsession")


def test_five_failures_of_one_account_from_one_address_throttle_that_pair(client):
    for _ in range(5):
        assert client.login(TEST_USER, "wrong", remote_addr="198.51.100.1").status == 401
    response = client.login(TEST_USER, TEST_PASSWORD, remote_addr="198.51.100.1")
    assert response.status == 429
    assert int(response.header("Retry-After")) > 0
    assert client.cookie("fmsession") is None


def test_repeated_failed_logins_are_one_audit_row_with_a_count(client, app, clock):
    for _ in range(4):
        client.login(TEST_USER, "wrong", remote_addr="192.0.2.9")
        clock.advance(60)
    rows = [r for r in app.ctx.audit.recent() if r["action"] == "login"]
    assert [(r["result"], r["count"]) for r in rows] == [("failed", 4)]
    # Throttled attempts are counted the same way.
    client.login(TEST_USER, "wrong", remote_addr="192.0.2.9")
    for _ in range(3):
        assert client.login(TEST_USER, "wrong", remote_addr="192.0.2.9").status == 429
    rows = {r["result"]: r["count"] for r in app.ctx.audit.recent() if r["action"] == "login"}
    assert rows == {"failed": 5, "throttled": 3}
    # After 10 quiet minutes a new row starts.
    clock.advance(11 * 60 + 3600)
    client.login(TEST_USER, "wrong", remote_addr="192.0.2.9")
    assert [r["count"] for r in app.ctx.audit.recent() if r["result"] == "failed"] == [1, 5]


def test_the_audit_log_drops_rows_older_than_audit_days(tmp_path, fake_agent, clock):
    from support.config_factory import write_config

    from fmappliance.config import load_config
    from fmappliance.dashboard.app import make_app

    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "audit_days": 30}))
    app = make_app(config, clock=clock)
    app.ctx.audit.record(user="admin", address="192.0.2.1", action="backup_site", target="prod/a")
    clock.advance(29 * 86400)
    app.ctx.audit.record(user="admin", address="192.0.2.1", action="backup_site", target="prod/b")
    clock.advance(2 * 86400)
    restarted = make_app(config, clock=clock)  # pruned at start (and hourly while running)
    assert [r["target"] for r in restarted.ctx.audit.recent()] == ["prod/b"]


def test_the_login_page_carries_the_csrf_token_meta(client):
    page = client.get("/login")
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert meta
    field = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert meta.group(1) == field


def test_five_failures_from_one_address_throttle_that_address_only(client):
    for i in range(5):
        client.login(f"user{i}", "wrong", remote_addr="192.0.2.10")
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="192.0.2.10").status == 429
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="192.0.2.11").status == 303


def test_throttle_delay_passes_and_grows(client, clock):
    for _ in range(5):
        client.login(TEST_USER, "wrong")
    first = int(client.login(TEST_USER, "wrong").header("Retry-After"))
    clock.advance(first)
    assert client.login(TEST_USER, "wrong").status == 401  # allowed again, and counted
    second = int(client.login(TEST_USER, "wrong").header("Retry-After"))
    assert second > first
    clock.advance(second)
    assert client.login(TEST_USER, TEST_PASSWORD).status == 303


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/\t/evil"]
)
def test_login_never_redirects_off_site(client, target):
    response = client.login(next_path=target)
    assert response.status == 303
    assert response.header("Location") == "/dashboard"


def test_login_returns_to_a_local_next_path(client):
    response = client.login(next_path="/stack/prod")
    assert response.header("Location") == "/stack/prod"


def test_logins_and_logout_are_audited_with_the_client_address(client, app):
    client.login(TEST_USER, "wrong", remote_addr="192.0.2.5")
    client.login(remote_addr="192.0.2.6")
    token = client.page_token()
    assert client.post("/logout", data={"csrf_token": token}).status == 303
    rows = app.ctx.audit.recent()
    assert [(r["action"], r["result"], r["user"]) for r in rows[::-1]] == [
        ("login", "failed", TEST_USER),
        ("login", "ok", TEST_USER),
        ("logout", "ok", TEST_USER),
    ]
    assert rows[-1]["address"] == "192.0.2.5" and rows[-2]["address"] == "192.0.2.6"
    assert rows[0]["time"].endswith("Z")


def test_signed_in_user_visiting_login_goes_to_next(logged_in):
    response = logged_in.get("/login?next=/audit")
    assert response.status == 303 and response.header("Location") == "/audit"


def test_a_typo_for_another_account_behind_a_shared_address_does_not_lock_out_the_office(client):
    # The account has failures from elsewhere (a guesser) and one colleague typo'd their own name here.
    for i in range(8):
        client.login(TEST_USER, "wrong", remote_addr=f"198.51.100.{i}")
    client.login("colleague", "wrong", remote_addr="192.0.2.50")
    # The office address failed, but not for this account: the account-wide delay does not apply to it.
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="192.0.2.50").status == 303


def test_ipv6_addresses_of_one_64_count_as_one_client(client):
    for i in range(5):
        assert client.login(TEST_USER, "wrong", remote_addr=f"2001:db8:1:2::{i + 1:x}").status == 401
    # Another address of the same /64 is the same client...
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="2001:db8:1:2:ffff::9").status == 429
    # ...another /64 is not.
    assert client.login(TEST_USER, TEST_PASSWORD, remote_addr="2001:db8:1:3::1").status == 303
