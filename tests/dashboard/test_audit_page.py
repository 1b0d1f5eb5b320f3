"""The audit log page: a page at a time with a count, filters by user, action, target and day,
and the outcome of the jobs its rows started."""

from __future__ import annotations

import datetime as dt
import re

from fmappliance.dashboard.pages_audit import PAGE_SIZE, day_range


def as_json(client, url: str) -> dict:
    response = client.get(url, headers={"Accept": "application/json"})
    assert response.status == 200, response.text
    return response.json()


def record_many(app, clock, n: int, **fields) -> None:
    for i in range(n):
        clock.advance(1)
        app.ctx.audit.record(
            user=fields.get("user", "ops"),
            address="192.0.2.1",
            action=fields.get("action", "backup_site"),
            target=fields.get("target", f"prod/site{i}.example.com"),
            result="started",
        )


def test_the_page_says_how_many_rows_there_are_and_pages_back(logged_in, app, clock):
    record_many(app, clock, PAGE_SIZE + 30)
    first = logged_in.get("/audit").text
    total = int(re.search(r'data-total="(\d+)"', first).group(1))
    assert total >= PAGE_SIZE + 30
    assert f"Rows 1–{PAGE_SIZE} of {total}" in first
    assert first.count('<tr><td data-label="Time">') == PAGE_SIZE
    assert 'href="/audit?page=2" rel="next"' in first and 'rel="prev"' not in first
    second = logged_in.get("/audit?page=2").text
    assert f"Rows {PAGE_SIZE + 1}–{total} of {total}" in second
    assert 'href="/audit?page=1" rel="prev"' in second and 'rel="next"' not in second
    # The oldest rows (the sign-in) are on the last page, not lost.
    assert ">login</td>" in second and ">login</td>" not in first


def test_filters_by_user_action_target_and_day(logged_in, app, clock):
    record_many(app, clock, 3, user="ops", action="backup_site", target="prod/a.example.com")
    record_many(app, clock, 2, user="eve", action="restart_stack", target="staging")
    by_user = as_json(logged_in, "/audit?user=eve")
    assert by_user["total"] == 2 and {r["user"] for r in by_user["events"]} == {"eve"}
    by_action = as_json(logged_in, "/audit?action=backup_site")
    assert by_action["total"] == 3
    by_target = as_json(logged_in, "/audit?target=a.example")
    assert by_target["total"] == 3
    today = dt.datetime.fromtimestamp(clock.now).astimezone().strftime("%Y-%m-%d")
    assert as_json(logged_in, f"/audit?day={today}&user=eve")["total"] == 2
    assert as_json(logged_in, "/audit?day=2001-01-01")["total"] == 0
    page = logged_in.get("/audit?action=restart_stack&user=eve").text
    assert "Rows 1–2 of 2 matching" in page
    assert '<option value="restart_stack" selected>' in page
    assert 'href="/audit">Show everything</a>' in page
    assert "Nothing matches these filters." in logged_in.get("/audit?user=nobody").text


def test_a_day_that_is_not_a_day_is_said_under_its_field(logged_in):
    response = logged_in.get("/audit?day=yesterday")
    assert response.status == 200
    assert "write it as YYYY-MM-DD" in response.text
    assert logged_in.get("/audit?day=yesterday", headers={"Accept": "application/json"}).status == 400


def test_a_row_that_started_a_job_shows_how_the_job_ended(logged_in, fake_agent):
    token = logged_in.page_token()
    started = logged_in.post_json(
        "/site/prod/site1.example.com/backup", {}, headers={"X-CSRF-Token": token, "Accept": "application/json"}
    )
    job_id = started.json()["job"]["id"]
    fake_agent.jobs[job_id].update(status="failed", message="Backup failed: disk full.")
    page = logged_in.get("/audit").text
    assert re.search(
        rf'<a href="/jobs/{job_id}">{job_id}</a>\s*<span class="badge badge-bad" data-outcome="failed" '
        r'title="Backup failed: disk full.">failed</span>',
        page,
    ), page


def test_day_range_is_the_servers_local_day_in_utc():
    since, until = day_range("2026-12-07")
    start = dt.datetime(2026, 12, 7).astimezone()
    assert since == start.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert until > since
    assert day_range("7.12.2026") is None


def fake_job(job_id: str, status: str, message: str) -> dict:
    return {"id": job_id, "action": "backup_site", "stack": "prod", "site": "s.example.com", "status": status,
            "created": "2026-11-25T02:00:00Z", "started": None, "finished": None, "exit_code": None,
            "message": message, "output": "", "result": {}, "_outcome": status}  # fmt: skip


def test_an_older_jobs_outcome_is_asked_by_id_and_an_ended_one_only_once(logged_in, app, fake_agent):
    fake_agent.jobs["old0000000000001"] = fake_job("old0000000000001", "succeeded", "Backup made.")
    for i in range(60):  # newer jobs push it out of the agent's short list
        job_id = f"new{i:013d}"
        fake_agent.jobs[job_id] = fake_job(job_id, "succeeded", "ok")
    app.ctx.audit.record(user="ops", address="192.0.2.1", action="backup_site", target="prod", result="started",
                         job_id="old0000000000001")  # fmt: skip
    asked = len(fake_agent.requests)
    page = logged_in.get("/audit").text
    assert 'data-outcome="succeeded" title="Backup made."' in page
    paths = [r[1] for r in fake_agent.requests[asked:]]
    assert "/jobs/old0000000000001" in paths
    asked = len(fake_agent.requests)
    assert 'data-outcome="succeeded"' in logged_in.get("/audit").text
    assert not [r for r in fake_agent.requests[asked:] if r[1].startswith("/jobs")]
