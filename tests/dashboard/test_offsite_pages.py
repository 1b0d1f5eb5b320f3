"""The Offsite section of a site's backups page and restoring from an offsite copy (same confirmation flow)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

SITE = "site1.example.com"
BACKUP = "2026-11-25_02-00-03"


def snapshot(backup: str, created: str) -> dict:
    return {
        "id": "ab12cd34",
        "backup": backup,
        "created": created,
        "size": 5000,
        "files": [{"name": f"{backup}.sql.gz", "size": 5000, "sha256": "0" * 64}],
    }


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_no_offsite_section_when_offsite_is_not_configured(logged_in, fake_agent):
    page = logged_in.get(f"/backups/prod/{SITE}").text
    assert "data-offsite-badge" not in page


def test_the_offsite_section_lists_copies_with_a_badge_the_last_check_and_restore_links(logged_in, fake_agent):
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2, minutes=5)
    fake_agent.offsite = {("prod", SITE): [snapshot(BACKUP, stamp(two_hours_ago))]}
    fake_agent.add_job(
        "offsite_check", "", None, "succeeded", "The offsite repository passed its check (data subset 3/20)."
    )
    page = logged_in.get(f"/backups/prod/{SITE}").text
    assert "offsite: 2 h ago" in page
    assert f'data-offsite-backup="{BACKUP}"' in page
    assert f'href="/restore/prod/{SITE}/{BACKUP}?source=offsite"' in page
    assert 'data-check-status="succeeded"' in page and "passed its check" in page


def test_a_failed_copy_shows_a_warning_badge_with_its_sentence(logged_in, fake_agent):
    fake_agent.offsite = {("prod", SITE): []}
    fake_agent.add_job(
        "offsite_copy",
        "prod",
        SITE,
        "failed",
        "The offsite repository could not be reached (connection refused or no route); copies catch up once it answers.",
    )
    page = logged_in.get(f"/backups/prod/{SITE}").text
    assert "badge-warn" in page and "offsite: last copy failed" in page
    assert "could not be reached" in page


def test_restoring_an_offsite_copy_sends_source_offsite(logged_in, fake_agent):
    fake_agent.offsite = {("prod", SITE): [snapshot(BACKUP, "2026-11-25T02:00:03Z")]}
    url = f"/restore/prod/{SITE}/{BACKUP}?source=offsite"
    page = logged_in.get(url)
    assert page.status == 200 and 'data-fact="source"' in page.text
    token = logged_in.page_token(url)
    response = logged_in.post(
        url, data={"csrf_token": token, "target_stack": "prod", "target_site": SITE, "confirm": SITE}
    )
    assert response.status == 303, response.text
    sent = [body for method, path, body in fake_agent.requests if method == "POST" and path == "/action"]
    assert sent[-1]["action"] == "restore_site" and sent[-1]["source"] == "offsite" and sent[-1]["backup"] == BACKUP
    # an id with no offsite copy is a 404 before any form
    assert logged_in.get(f"/restore/prod/{SITE}/2001-01-01_00-00-00?source=offsite").status == 404


def test_the_dashboard_shows_each_sites_offsite_age_or_a_warning(logged_in, fake_agent):
    stack = fake_agent.stack("prod")
    other = stack["sites"][1]
    stack["last_offsite"] = {
        SITE: {"time": stamp(datetime.now(timezone.utc) - timedelta(hours=2, minutes=1)), "backup": BACKUP},
        other: None,
    }
    stack["offsite_lag"] = {SITE: 0, other: 3}
    page = logged_in.get("/dashboard").text
    assert f'data-offsite="{SITE}">offsite: 2 h ago</span>' in page
    assert f'class="badge badge-warn" data-offsite="{other}">offsite: 3 not copied yet</span>' in page
