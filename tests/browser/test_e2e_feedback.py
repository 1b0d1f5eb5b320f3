"""Feedback where the operator clicked, in a real browser: a busy button while its job runs, the
row updated when it ends, a confirmation before a restart, the danger style on "Restore now", and
the action that asked for a fresh confirmation (step-up) sent again once it is given."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from playwright.sync_api import expect
from support.config_factory import TEST_PASSWORD
from support.world import COMPOSE_SITES

pytestmark = pytest.mark.browser

SITE, OTHER = COMPOSE_SITES
RESTORE_TIMEOUT_MS = 60_000


def site_row(page, stack: str, site: str):
    return page.locator(f"section.stack[data-stack='{stack}'] tr[data-site='{site}']")


def job_ids(served) -> set[str]:
    return {job["id"] for job in served.agent.request("GET", "/jobs?limit=500")[1]["jobs"]}


def expire_confirmation(served) -> None:
    """Make every session's last proved factor old, so the next destructive action asks again."""
    db = Path(served.world.config["dashboard"]["state_dir"]) / "dashboard.sqlite3"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE sessions SET verified_at = 0")


def test_backup_now_is_busy_at_the_button_until_the_job_ends_then_the_row_says_just_now(signed_in, served):
    page = signed_in.page
    row = site_row(page, "prod", OTHER)
    assert "no backup yet" in row.inner_text()
    served.world.doubles.set_faults(hang={"bench backup": 2})
    try:
        row.get_by_role("button", name="Backup now").click()
        page.locator("#action-results .job-panel[data-status='running']").wait_for()
        button = row.get_by_role("button", name="Backup now")
        assert button.is_disabled()
        assert button.get_attribute("aria-busy") == "true"
        assert "running" in row.locator(".action-status").inner_text()
        # Said once: the panel, not also a "Backup … started." banner.
        assert page.locator("#action-results .notice").count() == 0
        page.locator("#action-results .job-panel[data-status='succeeded']").wait_for()
    finally:
        served.world.doubles.set_faults()
    row.locator(".action-status.action-ok").wait_for()
    button = row.get_by_role("button", name="Backup now")
    assert button.is_enabled() and button.get_attribute("aria-busy") is None
    assert "no backup yet" not in row.inner_text()
    assert "just now" in row.inner_text()
    assert row.locator(".action-status").inner_text().startswith("Backup now: succeeded")
    panel = page.locator("#action-results .job-panel").first
    assert panel.locator("strong").inner_text() == "Backup"
    # htmx's inline indicator styles are off: no <style> element the CSP would have to block.
    assert page.evaluate("() => document.querySelectorAll('style').length") == 0
    signed_in.assert_clean()


def test_restart_of_a_stack_and_of_a_site_asks_first(signed_in, served):
    page = signed_in.page
    before = job_ids(served)
    messages = []

    def dismiss(dialog):
        messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.locator("section.stack[data-stack='prod'] .stack-head").get_by_role("button", name="Restart").click()
    site_row(page, "prod", SITE).get_by_role("button", name="Restart").click()
    page.evaluate("() => fetch('/healthz').then(r => r.text())")
    page.remove_listener("dialog", dismiss)
    assert messages == [
        "Restart stack prod? All its containers restart, the database included; sites are briefly down.",
        f"Restart site {SITE}? Its services restart; the site is briefly down.",
    ]
    assert job_ids(served) == before
    signed_in.assert_clean()


def test_after_the_fresh_confirmation_the_restore_goes_on_without_retyping(signed_in, served):
    page = signed_in.page
    status, answer = served.agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
    assert status == 202, answer
    assert served.agent.wait_job(answer["job"]["id"], timeout=60)["status"] == "succeeded"
    backup_id = served.agent.request("GET", f"/backups/prod/{SITE}")[1]["backups"][0]["id"]

    signed_in.goto(f"/restore/prod/{SITE}/{backup_id}")
    restore_button = page.locator("#restore-form").get_by_role("button", name="Restore now")
    assert "danger" in restore_button.get_attribute("class").split()
    page.locator("#restore-form-confirm").fill(SITE)
    expire_confirmation(served)
    before = job_ids(served)
    with page.expect_navigation(url="**/account/verify?**"):
        restore_button.click()
    assert job_ids(served) == before
    page.fill("#password", TEST_PASSWORD)
    with page.expect_navigation(url=f"**/restore/prod/{SITE}/{backup_id}"):
        page.get_by_role("button", name="Confirm").click()
    # Back on the restore page, the restore is sent again by itself: no retyping, no second click.
    panel = page.locator("#action-results .job-panel, .job-panel").first
    panel.wait_for()
    assert panel.get_attribute("data-action") == "restore_site"
    assert page.locator("#action-results .notice-ok").inner_text() == "Confirmed: the action you started goes on."
    page.locator(".job-panel[data-status='succeeded']").wait_for(timeout=RESTORE_TIMEOUT_MS)
    assert len(job_ids(served) - before) >= 1
    signed_in.assert_clean()


def test_on_a_phone_the_host_panels_stack_figures_keep_their_column_names(signed_in):
    page = signed_in.page
    page.set_viewport_size({"width": 375, "height": 812})
    signed_in.goto("/dashboard")
    cell = page.locator("#host-panel .host-stacks tr[data-stack='prod'] td.host-cpu")
    cell.wait_for()
    assert page.locator("#host-panel .host-stacks thead").is_hidden()
    before = cell.evaluate("td => getComputedStyle(td, '::before').content")
    assert before == '"CPU (% of one core): "', before
    signed_in.assert_clean()


def test_after_the_fresh_confirmation_an_update_goes_on_without_a_second_dialog(signed_in, served):
    page = signed_in.page
    dialogs = []

    def accept(dialog):
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    expire_confirmation(served)
    before = job_ids(served)
    with page.expect_navigation(url="**/account/verify?**"):
        page.locator("section.stack[data-stack='prod'] .stack-head").get_by_role("button", name="Update").click()
    assert job_ids(served) == before
    page.fill("#password", TEST_PASSWORD)
    with page.expect_navigation(url="**/dashboard"):
        page.get_by_role("button", name="Confirm").click()
    panel = page.locator("#action-results .job-panel[data-action='update_stack']")
    panel.wait_for()
    assert len(dialogs) == 1, dialogs  # asked once, before the confirmation; not again after it
    update = page.locator("section.stack[data-stack='prod'] .stack-head").get_by_role("button", name="Update")
    page.locator(
        "#action-results .job-panel[data-action='update_stack'][data-status='succeeded'], "
        "#action-results .job-panel[data-action='update_stack'][data-status='failed']"
    ).wait_for(timeout=RESTORE_TIMEOUT_MS)
    # The button stays busy while its job runs; when the job's result is shown it is usable again.
    update.locator("xpath=..").locator(".action-status.action-ok, .action-status.action-failed").wait_for(
        timeout=RESTORE_TIMEOUT_MS
    )
    expect(update).to_be_enabled()
    page.remove_listener("dialog", accept)
    signed_in.assert_clean()


def test_backup_now_on_the_backups_page_adds_the_new_backup_to_the_list_when_it_ends(signed_in, served):
    page = signed_in.page
    signed_in.goto(f"/backups/prod/{SITE}")
    rows = page.locator("table.backups tr[data-backup-id]")
    before = rows.count()
    page.locator(".page-head").get_by_role("button", name="Backup now").click()
    page.locator(".page-head .action-status.action-ok").wait_for(timeout=RESTORE_TIMEOUT_MS)
    assert rows.count() == before + 1
    assert "just now" in rows.first.inner_text()
    signed_in.assert_clean()
