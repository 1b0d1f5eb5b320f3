"""Actions answer JSON, an HTMX fragment or a redirect; job panels poll until the job ends."""

import re

import pytest

from fmappliance.dashboard import views

ACTIONS = [
    ("/stack/prod/restart", {"action": "restart_stack", "stack": "prod"}),
    ("/stack/prod/update", {"action": "update_stack", "stack": "prod"}),
    ("/site/prod/site1.example.com/restart", {"action": "restart_site", "stack": "prod", "site": "site1.example.com"}),
    ("/site/prod/site1.example.com/migrate", {"action": "migrate_site", "stack": "prod", "site": "site1.example.com"}),
    ("/site/prod/site1.example.com/backup", {"action": "backup_site", "stack": "prod", "site": "site1.example.com"}),
    (
        "/site/prod/site1.example.com/test-restore",
        {"action": "test_restore", "stack": "prod", "site": "site1.example.com"},
    ),
]


@pytest.mark.parametrize("path,sent", ACTIONS)
def test_each_action_sends_the_right_request_and_answers_json(logged_in, fake_agent, path, sent):
    token = logged_in.page_token()
    response = logged_in.post(path, json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert response.status == 202
    body = response.json()
    assert body["success"] is True and body["message"] and body["job"]["status"] == "queued"
    assert [r[2] for r in fake_agent.requests if r[0] == "POST"] == [sent]


def test_htmx_action_answers_a_polling_job_panel_said_once(logged_in):
    token = logged_in.page_token()
    response = logged_in.post(
        "/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert response.status == 200
    # The panel says what started; no "Backup … started." banner above it saying it again.
    assert "notice" not in response.text
    assert re.search(r'class="job-panel"[^>]*data-status="queued"', response.text)
    assert "<strong>Backup</strong>" in response.text
    assert 'hx-get="/jobs/0000000000000001"' in response.text and 'hx-trigger="every 1s"' in response.text


def test_htmx_action_already_running_says_so_above_its_panel(logged_in):
    token = logged_in.page_token()
    first = logged_in.post(
        "/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    again = logged_in.post(
        "/site/prod/site1.example.com/backup", data={"csrf_token": token}, headers={"HX-Request": "true"}
    )
    assert "notice" not in first.text
    assert 'class="notice notice-ok"' in again.text and "already queued or running" in again.text
    assert 'class="job-panel"' in again.text


def test_the_agents_generic_outcome_is_said_in_words():
    job = {"id": "j1", "action": "restart_stack", "stack": "staging", "status": "succeeded"}
    assert views.shape_job({**job, "message": "restart_stack on staging succeeded."})["message"] == (
        "Restart of staging succeeded."
    )
    site_job = {**job, "action": "backup_site", "site": "a.example.com"}
    assert views.shape_job({**site_job, "message": "backup_site on staging/a.example.com succeeded."})["message"] == (
        "Backup of staging/a.example.com succeeded."
    )
    assert views.shape_job({**job, "message": "Restarted 10 containers."})["message"] == "Restarted 10 containers."


def test_plain_form_post_redirects_back_and_shows_the_notice_once(logged_in):
    token = logged_in.page_token("/stack/prod")
    response = logged_in.post("/stack/prod/restart", data={"csrf_token": token, "return_to": "/stack/prod"})
    assert response.status == 303 and response.header("Location") == "/stack/prod"
    page = logged_in.get("/stack/prod").text
    assert "notice notice-ok" in page and "started" in page
    assert "notice notice-ok" not in logged_in.get("/stack/prod").text


def test_plain_form_post_never_redirects_off_site(logged_in):
    token = logged_in.page_token()
    response = logged_in.post("/stack/prod/restart", data={"csrf_token": token, "return_to": "//evil.example/"})
    assert response.header("Location") == "/dashboard"


def test_job_panel_polls_until_the_job_ends_then_shows_the_final_notice(logged_in):
    token = logged_in.page_token()
    job = logged_in.post(
        "/site/prod/site1.example.com/backup", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    ).json()["job"]
    htmx = {"HX-Request": "true"}
    running = logged_in.get(f"/jobs/{job['id']}", headers=htmx).text
    assert 'data-status="running"' in running and "hx-trigger" in running and "Backing up site..." in running
    done = logged_in.get(f"/jobs/{job['id']}", headers=htmx).text
    assert 'data-status="succeeded"' in done and "hx-trigger" not in done
    assert 'class="notice notice-ok"' in done and "Done." in done


def test_failed_job_ends_with_an_error_notice(logged_in, fake_agent):
    fake_agent.job_outcome = "failed"
    token = logged_in.page_token()
    job = logged_in.post(
        "/site/prod/site1.example.com/backup", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    ).json()["job"]
    logged_in.get(f"/jobs/{job['id']}", headers={"HX-Request": "true"})
    done = logged_in.get(f"/jobs/{job['id']}", headers={"HX-Request": "true"}).text
    assert 'data-status="failed"' in done and 'class="notice notice-error"' in done and "exit code 1" in done


def test_job_as_json_and_as_a_page(logged_in):
    token = logged_in.page_token()
    job = logged_in.post(
        "/stack/prod/restart", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    ).json()["job"]
    data = logged_in.get(f"/jobs/{job['id']}", headers={"Accept": "application/json"}).json()
    assert data["id"] == job["id"] and data["status"] == "running"
    page = logged_in.get(f"/jobs/{job['id']}")
    assert page.status == 200 and "<html" in page.text and "job-panel" in page.text


def test_unknown_job_is_404_and_bad_job_id_is_400(logged_in, fake_agent):
    assert logged_in.get("/jobs/ffffffffffffffff", headers={"Accept": "application/json"}).status == 404
    before = len(fake_agent.requests)
    assert logged_in.get("/jobs/bad%20id").status == 400
    assert len(fake_agent.requests) == before


def test_duplicate_action_shows_the_running_job(logged_in):
    token = logged_in.page_token()
    headers = {"X-CSRF-Token": token, "Accept": "application/json"}
    first = logged_in.post("/site/prod/site1.example.com/backup", json={}, headers=headers).json()
    second = logged_in.post("/site/prod/site1.example.com/backup", json={}, headers=headers).json()
    assert second["success"] is True and second["job"]["id"] == first["job"]["id"]
    assert "already" in second["message"].lower()


def test_actions_are_audited_with_job_id(logged_in, app):
    token = logged_in.page_token()
    logged_in.post("/site/prod/site1.example.com/backup", data={"csrf_token": token})
    row = app.ctx.audit.recent(1)[0]
    assert (row["action"], row["target"], row["result"], row["job_id"]) == (
        "backup_site",
        "prod/site1.example.com",
        "started",
        "0000000000000001",
    )
    assert row["user"] == "admin" and row["address"] == "203.0.113.7"


def test_invalid_site_name_is_refused_before_the_agent(logged_in, fake_agent):
    token = logged_in.page_token()
    response = logged_in.post(
        "/site/prod/bad%20site/backup", json={}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    )
    assert response.status == 400
    assert not [r for r in fake_agent.requests if r[0] == "POST"]


def test_polling_a_job_the_agent_forgot_ends_the_panel(logged_in):
    response = logged_in.get("/jobs/ffffffffffffffff", headers={"HX-Request": "true"})
    assert response.status == 200
    assert "hx-trigger" not in response.text and 'class="notice notice-error"' in response.text


def test_polling_while_the_agent_is_down_keeps_polling_with_a_warning(logged_in, fake_agent):
    fake_agent.fail_status = 500
    response = logged_in.get("/jobs/0000000000000001", headers={"HX-Request": "true"})
    assert response.status == 200
    assert 'hx-trigger="every 2s"' in response.text and "The agent failed (500)" in response.text
