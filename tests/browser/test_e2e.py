"""The operator's day in a real browser: sign in, look at the stacks, back up a site and download
the backup, see a failing action fail, confirm or cancel a risky action, sign out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support.world import COMPOSE_SITES

pytestmark = pytest.mark.browser

SITE = COMPOSE_SITES[0]


def site_row(page, stack: str, site: str):
    return page.locator(f"section.stack[data-stack='{stack}'] tr[data-site='{site}']")


def job_ids(served) -> set[str]:
    status, answer = served.agent.request("GET", "/jobs")
    assert status == 200, answer
    jobs = answer["jobs"] if isinstance(answer, dict) else answer
    return {job["id"] for job in jobs}


def manifests(served, stack: str, site: str) -> list[dict]:
    """The published manifests (``<id>.json`` beside the backup's files, which include a site config JSON)."""
    site_dir = Path(served.world.config["backups"]["base_path"]) / stack / site
    found = [json.loads(p.read_text()) for p in sorted(site_dir.glob("*.json"))]
    return [m for m in found if isinstance(m.get("files"), list) and m.get("site") == site]


def test_a_wrong_password_shows_the_error_and_the_right_one_opens_the_stacks_with_badges(watch):
    page = watch.page
    watch.goto("/dashboard")
    assert "/login" in page.url

    with watch.expecting_http_status(401):
        watch.sign_in(password="not the password")
    assert "/login" in page.url
    assert page.locator(".notice-error[role=alert]").inner_text() == "Wrong user name or password."
    watch.assert_clean()

    watch.sign_in()
    assert page.url.endswith("/dashboard")
    for stack in ("prod", "erp"):
        badge = page.locator(f"section.stack[data-stack='{stack}'] .stack-head .badge")
        assert badge.inner_text() == "running"
    assert site_row(page, "prod", SITE).count() == 1
    watch.assert_clean()


def test_backup_now_polls_until_succeeded_and_the_downloaded_files_match_the_manifest(signed_in, served):
    page = signed_in.page
    before = manifests(served, "prod", SITE)
    # The backup takes a moment, so the panel first shows a running job and must poll to see it end.
    served.world.doubles.set_faults(hang={"bench backup": 1.5})
    try:
        site_row(page, "prod", SITE).get_by_role("button", name="Backup now").click()
        # The handle keeps the first panel even after polling swaps it out.
        first = page.wait_for_selector("#action-results .job-panel")
        assert first.get_attribute("data-status") in ("queued", "running")
        assert first.get_attribute("hx-trigger") == "every 1s"
        page.locator("#action-results .job-panel[data-status='succeeded']").wait_for()
    finally:
        served.world.doubles.set_faults()
    finished = page.locator("#action-results .job-panel[data-status='succeeded']")
    assert finished.get_attribute("hx-trigger") is None, "a finished job panel must stop polling"
    assert finished.locator(".notice-ok").count() == 1
    signed_in.assert_clean()

    after = manifests(served, "prod", SITE)
    assert len(after) == len(before) + 1
    manifest = next(m for m in after if m not in before)

    with page.expect_navigation():
        site_row(page, "prod", SITE).get_by_role("link", name=SITE).click()
    assert f"/backups/prod/{SITE}" in page.url
    signed_in.assert_clean()
    row = page.locator(f"tr[data-backup-id='{manifest['id']}']")
    assert "verified" in row.inner_text()

    assert {f["part"] for f in manifest["files"]} >= {"database"}
    for entry in manifest["files"]:
        with page.expect_download() as info:
            row.get_by_role("link", name=entry["name"]).click()
        download = info.value
        assert download.failure() is None
        assert download.suggested_filename == entry["name"]
        data = Path(download.path()).read_bytes()
        assert len(data) == entry["size"], entry["name"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
    signed_in.assert_clean()


def test_a_failing_migrate_asks_first_then_shows_the_failed_job_and_its_error(signed_in, served):
    page = signed_in.page
    served.world.doubles.set_faults(fail={"bench migrate": {"rc": 1, "stderr": "MigrationError: patch failed"}})
    try:
        messages = []

        def accept(dialog):
            messages.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        site_row(page, "prod", SITE).get_by_role("button", name="Migrate").click()
        page.locator("#action-results .job-panel[data-status='failed']").wait_for()
    finally:
        served.world.doubles.set_faults()
    assert messages == [f"Migrate site {SITE}? It runs bench migrate."]
    panel = page.locator("#action-results .job-panel[data-status='failed']")
    assert panel.locator(".badge").first.inner_text() == "failed"
    error = panel.locator(".notice-error[role=alert]")
    assert error.is_visible()
    assert "failed with exit code 1" in error.inner_text()
    assert "MigrationError: patch failed" in panel.locator(".job-output").inner_text()
    signed_in.assert_clean()


def test_a_failing_restart_of_an_fm_stack_shows_in_its_jobs_the_job_page_and_the_audit_log(signed_in, served):
    page = signed_in.page
    with page.expect_navigation():
        page.locator("section.stack[data-stack='erp'] h2 a").click()
    assert page.url.endswith("/stack/erp")
    signed_in.assert_clean()

    # the real fm restarts supervisor in each container; its first `supervisorctl` fails
    served.world.doubles.set_faults(fail={"supervisorctl": {"rc": 2, "stderr": "unix:///tmp/supervisor.sock refused"}})
    try:
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator(".page-head").get_by_role("button", name="Restart").click()
        panel = page.locator("#action-results .job-panel[data-status='failed']")
        panel.wait_for()
    finally:
        served.world.doubles.set_faults()
    assert "failed with exit code 1" in panel.locator(".notice-error[role=alert]").inner_text()
    job_id = panel.get_attribute("data-job-id")
    signed_in.assert_clean()

    signed_in.goto("/stack/erp")
    recent = page.locator(f"table.jobs tr[data-job-id='{job_id}']")
    assert "failed" in recent.locator(".badge").inner_text()
    with page.expect_navigation():
        recent.locator("a").first.click()
    assert page.url.endswith(f"/jobs/{job_id}")
    assert page.locator(".job-panel").get_attribute("data-status") == "failed"
    assert "Failed to restart supervisor for frappe" in page.locator(".job-output").inner_text()
    signed_in.assert_clean()

    signed_in.goto("/audit")
    audited = page.locator("table.audit tr", has=page.locator(f"a[href='/jobs/{job_id}']"))
    assert audited.count() == 1
    cells = audited.locator("td").all_inner_texts()
    assert cells[1:6] == ["admin", "127.0.0.1", "restart_stack", "erp", "started"]
    # The row also says how the job it started ended.
    assert cells[6].split() == [job_id, "failed"]


def test_dismissing_the_update_confirmation_starts_nothing(signed_in, served):
    page = signed_in.page
    before = job_ids(served)
    messages = []

    def dismiss(dialog):
        messages.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.locator("section.stack[data-stack='prod'] .stack-head").get_by_role("button", name="Update").click()
    # A harmless request after the dialog: had the update been sent, it would have been sent first.
    page.evaluate("() => fetch('/healthz').then(r => r.text())")
    assert messages == ["Update stack prod? It pulls new images and restarts it; sites are briefly down."]
    assert page.locator("#action-results .job-panel").count() == 0
    assert job_ids(served) == before
    signed_in.assert_clean()


def test_signing_out_sends_a_revisit_of_the_dashboard_to_the_login_page(signed_in):
    page = signed_in.page
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    assert "/login" in page.url
    signed_in.goto("/dashboard")
    assert "/login" in page.url
    assert page.locator("#password").is_visible()


def test_an_action_after_the_session_ended_elsewhere_goes_to_the_login_page_and_back(signed_in, served):
    page = signed_in.page
    other = page.context.new_page()
    other.goto(served.url + "/dashboard")
    with other.expect_navigation():
        other.get_by_role("button", name="Sign out").click()
    other.close()

    before = job_ids(served)
    # The dashboard answers the htmx request 401, which Chromium and htmx both log as errors.
    with (
        signed_in.expecting_http_status(401),
        signed_in.expecting_console_error(r"^Response Status Error Code 401 from /site/"),
    ):
        with page.expect_navigation(url="**/login?next=%2Fdashboard"):
            site_row(page, "prod", SITE).get_by_role("button", name="Backup now").click()
    assert job_ids(served) == before
    signed_in.assert_clean()

    signed_in.sign_in()
    assert page.url.endswith("/dashboard")
    signed_in.assert_clean()


PHONE = {"width": 375, "height": 812}


def assert_no_horizontal_overflow(page, path: str) -> None:
    width, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert inner == PHONE["width"]
    assert width <= inner, f"{path} is {width}px wide on a {inner}px screen"


def test_the_login_page_fits_a_phone_screen_without_horizontal_scrolling(watch):
    watch.page.set_viewport_size(PHONE)
    watch.goto("/login")
    assert_no_horizontal_overflow(watch.page, "/login")


@pytest.mark.parametrize("path", ["/dashboard", "/stack/prod", f"/backups/prod/{SITE}", "/audit"])
def test_pages_fit_a_phone_screen_without_horizontal_scrolling(signed_in, path):
    signed_in.page.set_viewport_size(PHONE)
    signed_in.goto(path)
    assert signed_in.page.url.endswith(path)
    assert_no_horizontal_overflow(signed_in.page, path)


def test_the_page_watcher_catches_an_inline_script_the_csp_blocks(signed_in):
    """Guards the guard: a CSP violation in a page fails the test that visited it."""
    signed_in.page.evaluate("""() => {
        const s = document.createElement("script");
        s.textContent = "window.injected = 1";
        document.body.appendChild(s);
    }""")
    with pytest.raises(AssertionError) as caught:
        signed_in.page.wait_for_function("() => true")
        signed_in.assert_clean()
    assert "CSP violation" in str(caught.value)
    assert "script-src" in str(caught.value)
    assert signed_in.page.evaluate("() => window.injected") is None


def test_the_host_panel_fills_in_after_the_dashboard_and_fits_a_phone(signed_in):
    page = signed_in.page
    page.set_viewport_size(PHONE)
    signed_in.goto("/dashboard")
    panel = page.locator("#host-panel")
    panel.locator(".host-stacks tr[data-stack='prod']").wait_for()
    assert panel.locator(".host-load").get_attribute("data-load").count(" ") == 2
    assert int(panel.locator(".host-memory").get_attribute("data-bytes")) > 0
    assert int(panel.locator("[data-disk='docker']").get_attribute("data-bytes")) > 0
    assert float(panel.locator("tr[data-stack='erp'] .host-cpu").get_attribute("data-cpu")) > 0
    assert_no_horizontal_overflow(page, "/dashboard with the host panel")
    signed_in.assert_clean()
