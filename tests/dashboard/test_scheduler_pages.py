"""The schedules page over WSGI with the fake agent: add/list/remove/enable/disable as a form,
JSON and HTMX, per-field errors, config schedules, auth/CSRF/405, audit rows, and the
overdue-backup alert and the unscheduled-site warning on the dashboard."""

from __future__ import annotations

import html
import io
import re
from datetime import datetime, timezone

import pytest
from fake_agent import iso, make_stack
from support.config_factory import write_config
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app

POST_ROUTES = ["/scheduler/add", "/scheduler/remove/abc123", "/scheduler/enable/abc123", "/scheduler/disable/abc123"]
DAILY = {
    "stack": "prod",
    "site": "site1.example.com",
    "frequency": "daily",
    "time": "02:30",
    "timezone": "Europe/Berlin",
}


def store_of(app):
    return app.ctx.scheduler.store


def audit_rows(app, action):
    return [r for r in app.ctx.audit.recent() if r["action"] == action]


def json_headers(client, **extra):
    return {"Accept": "application/json", "X-CSRF-Token": client.page_token("/scheduler"), **extra}


def htmx_headers(client):
    return {"HX-Request": "true", "X-CSRF-Token": client.page_token("/scheduler")}


def add_json(client, **fields):
    return client.post("/scheduler/add", json={**DAILY, **fields}, headers=json_headers(client))


def row_of(page: str, schedule_id: str) -> str:
    match = re.search(rf'<tr data-schedule-id="{re.escape(schedule_id)}".*?</tr>', page, re.S)
    assert match, f"no row for {schedule_id}"
    return match.group(0)


# ---- listing and adding ------------------------------------------------------------------


def test_empty_page_explains_how_to_add_a_schedule(logged_in):
    page = logged_in.get("/scheduler")
    assert page.status == 200
    assert "No backup schedules yet" in page.text
    assert 'action="/scheduler/add"' in page.text and 'name="csrf_token"' in page.text
    # The stacks and sites come from the agent; the zone defaults to the server's.
    assert '<option value="prod">prod</option>' in page.text
    assert '<option value="site1.example.com">' in page.text
    assert f'placeholder="{store_of(logged_in.app).default_tz}"' in page.text


def test_form_add_redirects_and_the_table_shows_next_runs_in_the_schedule_zone(app, logged_in):
    token = logged_in.page_token("/scheduler")
    response = logged_in.post("/scheduler/add", data={**DAILY, "csrf_token": token})
    assert response.status == 303 and response.header("Location") == "/scheduler"
    [schedule] = store_of(app).list()
    assert (schedule["stack"], schedule["site"], schedule["time"], schedule["timezone"]) == (
        "prod",
        "site1.example.com",
        "02:30",
        "Europe/Berlin",
    )
    assert schedule["created_by"] == "admin"
    page = logged_in.get("/scheduler").text
    assert "Schedule added: site1.example.com on prod, daily at 02:30" in page  # the flash
    row = row_of(page, schedule["id"])
    next_runs = re.findall(r"<li>([^<]+)</li>", row)
    assert len(next_runs) == 3
    assert all(t.endswith(("02:30 CET", "02:30 CEST")) for t in next_runs)
    assert 'data-status="ok"' in row and "added by admin" in row and "not run yet" in row
    assert 'hx-confirm="Remove the schedule' in row


def test_json_add_answers_the_schedule_with_its_next_runs_and_the_list_has_it(app, logged_in):
    response = add_json(logged_in, site="*", frequency="weekly", day_of_week="sun", time="03:15", timezone="UTC")
    assert response.status == 200
    answer = response.json()
    assert answer["success"] is True and "every site on prod, weekly on Sunday at 03:15" in answer["message"]
    schedule = answer["schedule"]
    assert schedule["site"] == "*" and schedule["frequency"] == "weekly" and schedule["day_of_week"] == "sun"
    assert len(schedule["next_runs"]) == 3
    assert all(datetime.fromisoformat(t).weekday() == 6 and t[11:16] == "03:15" for t in schedule["next_runs"])
    listed = logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()
    assert [s["id"] for s in listed["schedules"]] == [schedule["id"]]
    assert listed["schedules"][0]["status"] == "ok" and listed["schedules"][0]["source"] == "ui"


def test_site_omitted_in_json_means_every_site(logged_in):
    response = logged_in.post(
        "/scheduler/add",
        json={"stack": "erp", "frequency": "monthly", "day_of_month": 5, "time": "01:00"},
        headers=json_headers(logged_in),
    )
    assert response.status == 200, response.text
    schedule = response.json()["schedule"]
    assert schedule["site"] == "*" and schedule["day_of_month"] == 5
    assert schedule["timezone"] == store_of(logged_in.app).default_tz


def test_htmx_add_answers_the_updated_table_and_a_notice(app, logged_in):
    response = logged_in.post("/scheduler/add", data=DAILY, headers=htmx_headers(logged_in))
    assert response.status == 200
    assert response.text.startswith('<div id="scheduler-body">') and "<html" not in response.text
    assert 'class="notice notice-ok"' in response.text and "Schedule added" in response.text
    [schedule] = store_of(app).list()
    assert f'data-schedule-id="{schedule["id"]}"' in response.text


def test_every_add_is_audited_with_user_address_and_target(app, logged_in):
    add_json(logged_in)
    add_json(logged_in, time="99:99")
    rows = audit_rows(app, "schedule_add")
    assert [(r["user"], r["address"], r["target"]) for r in rows] == [
        ("admin", "203.0.113.7", "prod/site1.example.com")
    ] * 2
    assert rows[0]["result"] == "invalid: time" and rows[1]["result"] == "ok"


# ---- per-field errors store nothing -----------------------------------------------------------


BAD = {
    "stack": "prod",
    "site": "nope.example.com",
    "frequency": "weekly",
    "time": "25:00",
    "day_of_week": "someday",
    "timezone": "Mars/Olympus",
}


def test_invalid_json_add_answers_400_with_a_message_per_field_and_stores_nothing(app, logged_in):
    response = logged_in.post("/scheduler/add", json=BAD, headers=json_headers(logged_in))
    assert response.status == 400
    answer = response.json()
    assert answer["success"] is False
    assert set(answer["errors"]) == {"site", "time", "day_of_week", "timezone"}
    assert "no site 'nope.example.com'" in answer["errors"]["site"]
    assert "HH:MM" in answer["errors"]["time"] and "Mars/Olympus" in answer["errors"]["timezone"]
    assert store_of(app).list() == []


def test_invalid_form_add_shows_each_error_under_its_field_and_keeps_the_input(app, logged_in):
    token = logged_in.page_token("/scheduler")
    response = logged_in.post(
        "/scheduler/add", data={**BAD, "frequency": "monthly", "day_of_month": "31", "csrf_token": token}
    )
    assert response.status == 400
    fields = dict(re.findall(r'<p class="field-error" data-field="(\w+)">([^<]+)</p>', response.text))
    assert set(fields) == {"site", "time", "day_of_month", "timezone"}
    assert "1 to 28" in html.unescape(fields["day_of_month"])
    assert 'value="25:00"' in response.text and 'value="Mars/Olympus"' in response.text
    assert "<html" in response.text  # a whole page, not a fragment
    assert store_of(app).list() == []


def test_invalid_htmx_add_answers_400_with_the_form_fragment(app, logged_in):
    response = logged_in.post(
        "/scheduler/add", data={"stack": "", "frequency": "hourly", "time": "2am"}, headers=htmx_headers(logged_in)
    )
    assert response.status == 400
    assert response.text.startswith('<div id="scheduler-body">')
    assert {"stack", "frequency", "time"} <= set(re.findall(r'data-field="(\w+)"', response.text))
    assert "data-swap-errors" in response.text  # app.js swaps this 400 in place
    assert store_of(app).list() == []


def test_unknown_stack_is_refused_naming_the_known_ones(app, logged_in):
    response = add_json(logged_in, stack="staging")
    assert response.status == 400
    assert "known stacks: erp, prod" in response.json()["errors"]["stack"]


def raw_post(client, path, body: bytes, headers: dict):
    """POST a body exactly as given (the client would encode it)."""
    original = client.app

    def with_body(environ, start_response):
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return original(environ, start_response)

    client.app = with_body
    try:
        return client.post(path, headers=headers)
    finally:
        client.app = original


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"prod"'])
def test_a_json_body_that_is_not_an_object_is_refused(app, logged_in, body):
    headers = json_headers(logged_in, **{"Content-Type": "application/json"})
    response = raw_post(logged_in, "/scheduler/add", body, headers)
    assert response.status == 400 and response.json()["success"] is False
    assert store_of(app).list() == []


def test_an_agent_that_cannot_be_reached_does_not_block_adding(app, logged_in, fake_agent):
    fake_agent.fail_status = 500
    app.ctx.agent.invalidate()
    response = add_json(logged_in, stack="prod", site="*")
    assert response.status == 200
    page = logged_in.get("/scheduler").text
    assert "cannot be asked for its stacks and sites" in page


# ---- remove, enable, disable -------------------------------------------------------------


def test_remove_via_form_json_and_htmx(app, logged_in):
    ids = [add_json(logged_in, time=t).json()["schedule"]["id"] for t in ("01:00", "02:00", "03:00")]
    token = logged_in.page_token("/scheduler")
    form = logged_in.post(f"/scheduler/remove/{ids[0]}", data={"csrf_token": token})
    assert form.status == 303 and form.header("Location") == "/scheduler"
    assert "Schedule removed: site1.example.com on prod, daily at 01:00." in logged_in.get("/scheduler").text
    as_json = logged_in.post(f"/scheduler/remove/{ids[1]}", headers=json_headers(logged_in))
    assert as_json.status == 200 and as_json.json()["success"] is True
    assert as_json.json()["schedule"]["id"] == ids[1]
    fragment = logged_in.post(f"/scheduler/remove/{ids[2]}", headers=htmx_headers(logged_in))
    assert fragment.status == 200 and "Schedule removed" in fragment.text and "No backup schedules yet" in fragment.text
    assert store_of(app).list() == []
    rows = audit_rows(app, "schedule_remove")
    assert [(r["target"], r["result"]) for r in rows] == [("prod/site1.example.com", "ok")] * 3


def test_removing_an_unknown_schedule_is_404(app, logged_in):
    response = logged_in.post("/scheduler/remove/0123456789ab", headers=json_headers(logged_in))
    assert response.status == 404 and "no such schedule" in response.json()["message"]
    assert audit_rows(app, "schedule_remove")[0]["result"] == "refused: no such schedule"


def test_disable_and_enable_change_the_status_and_are_audited(app, logged_in):
    schedule_id = add_json(logged_in).json()["schedule"]["id"]
    disabled = logged_in.post(f"/scheduler/disable/{schedule_id}", headers=json_headers(logged_in))
    assert disabled.status == 200
    assert disabled.json()["schedule"]["status"] == "disabled" and disabled.json()["schedule"]["next_runs"] == []
    row = row_of(logged_in.get("/scheduler").text, schedule_id)
    assert 'data-status="disabled"' in row and f'action="/scheduler/enable/{schedule_id}"' in row
    fragment = logged_in.post(f"/scheduler/enable/{schedule_id}", headers=htmx_headers(logged_in))
    assert fragment.status == 200 and "Schedule resumed" in fragment.text
    assert 'data-status="ok"' in row_of(fragment.text, schedule_id)
    assert store_of(app).get(schedule_id)["enabled"] is True
    assert [r["result"] for r in audit_rows(app, "schedule_disable") + audit_rows(app, "schedule_enable")] == [
        "ok",
        "ok",
    ]


# ---- config-declared schedules ------------------------------------------------------------


@pytest.fixture
def config_app(tmp_path, fake_agent, clock):
    path = write_config(
        tmp_path,
        dashboard={"agent_url": fake_agent.url},
        schedules=[
            {"stack": "erp", "site": "erp.example.com", "frequency": "daily", "time": "04:00", "timezone": "UTC"}
        ],
    )
    return make_app(load_config(path), clock=clock)


def test_config_schedules_are_shown_and_cannot_be_removed_or_toggled(config_app):
    client = WSGIClient(config_app)
    assert client.login().status == 303
    [schedule] = store_of(config_app).list()
    row = row_of(client.get("/scheduler").text, schedule["id"])
    assert 'data-source="config"' in row and "config.yaml" in row
    assert "/scheduler/remove/" not in row and "<button" not in row
    for verb in ("remove", "disable", "enable"):
        response = client.post(f"/scheduler/{verb}/{schedule['id']}", headers=json_headers(client))
        assert response.status == 409
        assert "declared in config.yaml" in response.json()["message"]
    assert store_of(config_app).get(schedule["id"])["enabled"] is True
    assert audit_rows(config_app, "schedule_remove")[0]["result"] == "refused: declared in config.yaml"


# ---- last runs ----------------------------------------------------------------------------------


def test_last_run_shows_its_time_result_and_a_link_to_its_job(app, logged_in):
    schedule_id = add_json(logged_in, timezone="UTC").json()["schedule"]["id"]
    when = datetime(2026, 11, 25, 2, 30, tzinfo=timezone.utc)
    store_of(app).record_run(
        schedule_id,
        when,
        when,
        "00000000000000ab",
        "submitted",
        "Handed to the agent as job 00000000000000ab.",
        job_status="failed",
    )
    row = row_of(logged_in.get("/scheduler").text, schedule_id)
    assert "Wed 2026-11-25 02:30 UTC" in row
    assert '<a href="/jobs/00000000000000ab">job 00000000000000ab</a>' in row
    assert 'class="badge badge-bad">failed<' in row
    listed = logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()["schedules"][0]
    assert listed["last_run"]["job_id"] == "00000000000000ab" and listed["last_run"]["job_status"] == "failed"


# ---- auth, CSRF, methods, escaping --------------------------------------------------------------


def test_scheduler_page_needs_a_session(client, fake_agent):
    response = client.get("/scheduler")
    assert response.status == 303 and response.header("Location") == "/login?next=%2Fscheduler"
    assert client.get("/scheduler", headers={"Accept": "application/json"}).status == 401
    assert client.get("/scheduler", headers={"HX-Request": "true"}).status == 401


@pytest.mark.parametrize("path", POST_ROUTES)
def test_posts_without_a_session_do_nothing(app, client, path):
    assert client.post(path, data={**DAILY, "csrf_token": "x"}).status == 303
    assert client.post(path, json=DAILY, headers={"Accept": "application/json"}).status == 401
    assert store_of(app).list() == []


@pytest.mark.parametrize("path", POST_ROUTES)
def test_get_on_a_post_route_is_405(logged_in, path):
    assert logged_in.get(path).status == 405


def test_posts_without_a_valid_csrf_token_or_from_another_origin_are_refused(app, logged_in):
    schedule_id = add_json(logged_in).json()["schedule"]["id"]
    token = logged_in.page_token("/scheduler")
    for path in ("/scheduler/add", f"/scheduler/remove/{schedule_id}", f"/scheduler/disable/{schedule_id}"):
        assert logged_in.post(path, data=DAILY).status == 403
        assert logged_in.post(path, data={**DAILY, "csrf_token": "wrong"}).status == 403
        foreign = logged_in.post(path, data={**DAILY, "csrf_token": token}, headers={"Origin": "https://evil.example"})
        assert foreign.status == 403
    [schedule] = store_of(app).list()
    assert schedule["enabled"] is True


def test_submitted_values_are_echoed_escaped(logged_in):
    token = logged_in.page_token("/scheduler")
    response = logged_in.post(
        "/scheduler/add", data={**DAILY, "timezone": '"><script>alert(1)</script>', "csrf_token": token}
    )
    assert response.status == 400
    assert "<script>alert(1)" not in response.text
    assert "&lt;script&gt;alert(1)" in response.text


# ---- the dashboard alert and highlight ----------------------------------------------------------


def stacks_with_backups(now: float, ages_hours: dict) -> list:
    stack = make_stack("prod", list(ages_hours), now=now)
    stack["last_backups"] = {
        site: (
            {"id": "x", "created": iso(now - hours * 3600), "size": 1000, "verified": True}
            if hours is not None
            else None
        )
        for site, hours in ages_hours.items()
    }
    return [stack]


def test_dashboard_alerts_for_a_scheduled_site_whose_backup_is_older_than_twice_its_interval(
    logged_in, fake_agent, clock
):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 72, "site2.example.com": 3})
    add_json(logged_in, site="*")  # daily: the limit is 48 h
    page = logged_in.get("/dashboard").text
    alerts = re.findall(r'<div class="notice notice-error overdue"[^>]*data-site="([^"]+)"', page)
    assert alerts == ["site1.example.com"]
    assert "The last good backup of site1.example.com on prod is 3 days old" in page
    assert 'href="/backups/prod/site1.example.com"' in page


def test_no_alert_for_fresh_backups_or_unscheduled_sites(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 72, "site2.example.com": 3})
    add_json(logged_in, site="site2.example.com")
    assert "overdue" not in logged_in.get("/dashboard").text


def test_an_unverified_backup_does_not_count_as_good(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 1})
    fake_agent.stacks[0]["last_backups"]["site1.example.com"]["verified"] = False
    add_json(logged_in)
    clock.advance(3 * 86400)  # the schedule is now old enough to expect a backup
    assert logged_in.login().status == 303  # the session has ended meanwhile
    page = logged_in.get("/dashboard").text
    assert "No good backup of site1.example.com on prod yet" in page


def test_backup_age_highlight_follows_each_sites_schedule(app, logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 72, "site2.example.com": 72})
    add_json(logged_in, site="site1.example.com", frequency="weekly", day_of_week="mon")
    assert app.ctx.backup_age.stale_hours("prod", "site1.example.com") == 336
    assert app.ctx.backup_age.stale_hours("prod", "site2.example.com") == 48
    page = logged_in.get("/dashboard").text
    assert re.search(r'data-site="site1.example.com">.*?class="age-ok">3 d ago', page, re.S)
    assert re.search(r'data-site="site2.example.com">.*?class="age-stale">3 d ago', page, re.S)


def test_a_broken_schedule_is_shown_with_its_reason(app, logged_in):
    schedule_id = add_json(logged_in, stack="erp", site="erp.example.com").json()["schedule"]["id"]
    store_of(app).set_broken(schedule_id, "Stack 'erp' no longer exists; remove this schedule or restore the stack.")
    row = row_of(logged_in.get("/scheduler").text, schedule_id)
    assert 'data-status="broken"' in row and "badge-bad" in row
    assert "Stack &#039;erp&#039; no longer exists" in row
    listed = logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()["schedules"][0]
    assert listed["status"] == "broken" and "no longer exists" in listed["broken_reason"]


def test_an_every_site_run_lists_each_site_with_its_job(app, logged_in):
    schedule_id = add_json(logged_in, site="*", timezone="UTC").json()["schedule"]["id"]
    store = store_of(app)
    when = datetime(2026, 11, 25, 2, 30, tzinfo=timezone.utc)
    run_id = store.record_run(schedule_id, when, when, None, "pending", catch_up=True)
    store.replace_run(
        run_id,
        [
            {
                "site": "site1.example.com",
                "job_id": "00000000000000a1",
                "result": "submitted",
                "job_status": "succeeded",
            },
            {
                "site": "site2.example.com",
                "result": "failed",
                "message": "The agent did not accept the backup of site2.example.com on prod: boom",
            },
        ],
    )
    row = row_of(logged_in.get("/scheduler").text, schedule_id)
    assert re.search(
        r'badge-ok">succeeded</span>\s*<span class="muted">site1.example.com</span>\s*<span class="muted">\(catch-up\)</span>\s*'
        r'<a href="/jobs/00000000000000a1">',
        row,
    )
    assert 'badge-bad">failed</span>' in row and "did not accept the backup of site2.example.com on prod: boom" in row


def test_htmx_get_answers_the_fragment_only(logged_in):
    response = logged_in.get("/scheduler", headers={"HX-Request": "true"})
    assert response.status == 200 and response.text.startswith('<div id="scheduler-body">')
    assert response.header("Cache-Control") == "no-store"


def test_no_alert_for_sites_the_agent_cannot_list_right_now(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 1})
    add_json(logged_in)
    fake_agent.stacks[0].update(status="unknown", sites=[], last_backups={})  # docker daemon not reachable
    logged_in.app.ctx.agent.invalidate()
    clock.advance(3 * 86400)
    assert logged_in.login().status == 303
    assert "overdue" not in logged_in.get("/dashboard").text


# ---- sites no schedule covers -------------------------------------------------------------


def unscheduled_warnings(page: str) -> dict:
    found = re.findall(
        r'<div class="notice notice-warn unscheduled"[^>]*data-stack="([^"]+)" data-sites="([^"]*)">([^<]*)<', page
    )
    return {stack: (sites.split(), html.unescape(text)) for stack, sites, text in found}


def test_dashboard_warns_about_every_site_no_schedule_covers(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3, "site2.example.com": None})
    page = logged_in.get("/dashboard").text
    warnings = unscheduled_warnings(page)
    assert warnings["prod"][0] == ["site1.example.com", "site2.example.com"]
    assert warnings["prod"][1].startswith(
        "No backup schedule covers site1.example.com, site2.example.com on prod: "
        "they are backed up only when someone starts a backup by hand."
    )
    assert 'href="/scheduler">Add a schedule</a>' in page


def test_a_schedule_for_one_site_leaves_the_warning_for_the_other(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3, "site2.example.com": 3})
    add_json(logged_in, site="site1.example.com")
    warnings = unscheduled_warnings(logged_in.get("/dashboard").text)
    assert warnings == {"prod": (["site2.example.com"], warnings["prod"][1])}
    assert "covers site2.example.com on prod: it is backed up only" in warnings["prod"][1]


def test_an_every_site_schedule_or_a_config_schedule_silences_the_warning(tmp_path, logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3, "site2.example.com": 3})
    add_json(logged_in, site="*", frequency="weekly", day_of_week="mon")
    assert unscheduled_warnings(logged_in.get("/dashboard").text) == {}
    (tmp_path / "cfg").mkdir()
    config = load_config(
        write_config(
            tmp_path / "cfg",
            dashboard={"agent_url": fake_agent.url},
            schedules=[{"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00"}],
        )
    )
    client = WSGIClient(make_app(config, clock=clock))
    client.login()
    assert unscheduled_warnings(client.get("/dashboard").text) == {}


def test_a_paused_schedule_does_not_cover_its_sites_and_the_warning_says_so(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3})
    schedule_id = add_json(logged_in, site="*").json()["schedule"]["id"]
    assert unscheduled_warnings(logged_in.get("/dashboard").text) == {}
    token = logged_in.page_token("/scheduler")
    assert logged_in.post(f"/scheduler/disable/{schedule_id}", data={"csrf_token": token}).status == 303
    warnings = unscheduled_warnings(logged_in.get("/dashboard").text)
    assert warnings["prod"][0] == ["site1.example.com"] and "(a schedule that would is paused)" in warnings["prod"][1]


def test_no_warning_while_the_agent_cannot_list_a_stacks_sites(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3})
    fake_agent.stacks[0].update(status="unknown", sites=[], last_backups={})
    assert unscheduled_warnings(logged_in.get("/dashboard").text) == {}


def test_site_names_in_the_warning_are_escaped(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"<b>x</b>": 3})
    page = logged_in.get("/dashboard").text
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page


def test_odd_site_entries_from_the_agent_do_not_break_the_warning(logged_in, fake_agent, clock):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 3})
    fake_agent.stacks[0]["sites"] = ["site1.example.com", {"not": "a name"}, None, "site1.example.com"]
    page = logged_in.get("/dashboard")
    assert page.status == 200
    assert unscheduled_warnings(page.text)["prod"][0] == ["site1.example.com"]


# ---- test-restore schedules --------------------------------------------------------------


def test_a_test_restore_schedule_is_added_by_json_form_and_htmx_and_shown_with_its_kind(app, logged_in):
    answer = add_json(logged_in, kind="test_restore", site="*").json()
    assert answer["success"] is True and answer["schedule"]["kind"] == "test_restore"
    assert "test restore of every site on prod" in answer["message"]
    token = logged_in.page_token("/scheduler")
    assert logged_in.post("/scheduler/add", data={**DAILY, "csrf_token": token}).status == 303  # no kind: backup
    response = logged_in.post(
        "/scheduler/add", data={**DAILY, "kind": "test_restore", "time": "04:00"}, headers=htmx_headers(logged_in)
    )
    assert response.status == 200 and response.text.startswith('<div id="scheduler-body">')
    kinds = sorted(s["kind"] for s in store_of(app).list())
    assert kinds == ["backup", "test_restore", "test_restore"]
    page = logged_in.get("/scheduler").text
    for schedule in store_of(app).list():
        row = row_of(page, schedule["id"])
        assert f'data-kind="{schedule["kind"]}"' in row
        assert ("Test restore" if schedule["kind"] == "test_restore" else "Backup") in row
    listed = logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()["schedules"]
    assert sorted(s["kind"] for s in listed) == kinds
    assert '<option value="test_restore">' in page  # the form offers the kind


def test_an_unknown_kind_is_refused_per_field_as_json_and_form_and_stores_nothing(app, logged_in):
    response = add_json(logged_in, kind="restore")
    assert response.status == 400
    assert set(response.json()["errors"]) == {"kind"}
    assert "backup or test_restore" in response.json()["errors"]["kind"]
    token = logged_in.page_token("/scheduler")
    response = logged_in.post("/scheduler/add", data={**DAILY, "kind": "<b>x</b>", "csrf_token": token})
    assert response.status == 400
    fields = dict(re.findall(r'<p class="field-error" data-field="(\w+)">([^<]+)</p>', response.text))
    assert set(fields) == {"kind"}
    assert "<b>x</b>" not in response.text
    assert store_of(app).list() == []


def test_a_test_restore_schedule_neither_silences_the_unscheduled_warning_nor_sets_an_overdue_limit(
    logged_in, fake_agent, clock
):
    fake_agent.stacks = stacks_with_backups(clock.now, {"site1.example.com": 72, "site2.example.com": 3})
    add_json(logged_in, kind="test_restore", site="*")
    page = logged_in.get("/dashboard").text
    assert "overdue" not in page, "a test restore makes no backup: it sets no age limit"
    warnings = unscheduled_warnings(page)
    assert warnings["prod"][0] == ["site1.example.com", "site2.example.com"]


# ---- what the agent runs -----------------------------------------------------------------


def test_the_page_shows_the_agents_applied_version_and_each_schedules_state(app, logged_in, fake_agent):
    added = add_json(logged_in).json()["schedule"]
    # Not pushed yet (the service is not started in these tests): the agent has no set.
    assert logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()["agent"]["version"] is None
    assert app.ctx.scheduler.push()
    assert [s["id"] for s in fake_agent.schedule_set["schedules"]] == [added["id"]]
    fake_agent.schedule_results[added["id"]] = {
        "lateness_seconds": 180,
        "missed_total": 2,
        "last_handled": {
            "due": "2026-11-25T01:30:00Z",
            "job": "00000000000000aa",
            "status": "failed",
            "catch_up": True,
            "message": "bench backup failed: exit code 1",
        },
    }
    import time

    time.sleep(2.1)  # the page reads the agent's view at most every 2 s
    answer = logged_in.get("/scheduler", headers={"Accept": "application/json"}).json()
    assert answer["agent"] == {"version": 1, "state": "applied"}
    [item] = answer["schedules"]
    assert item["next_due"] and item["lateness_seconds"] == 180 and item["missed_total"] == 2
    assert item["last_run"]["result"] == "failed" and item["last_run"]["job_id"] == "00000000000000aa"
    page = logged_in.get("/scheduler").text
    assert 'data-state="applied"' in page and "applied</span>" in page
    row = row_of(page, added["id"])
    assert "agent: next due" in row and "3 min late; 2 missed" in row
    assert "bench backup failed: exit code 1" in row and "(catch-up)" in row

    fake_agent.fail_status = 502
    time.sleep(2.1)
    page = logged_in.get("/scheduler").text
    assert 'data-state="pending"' in page and "pending: the agent is not answering" in page
