"""Backup schedules in a real browser: reach them from the nav, see a wrong time refused under its
field, add a weekly schedule and read its next runs, pause it, remove it; a schedule declared in
config.yaml shows but cannot be removed from the page."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from support.world import COMPOSE_SITES, FM_SITE

from fmappliance.dashboard.pages_scheduler import DAY_NAMES
from fmappliance.dashboard.schedule_calendar import WEEKDAYS

pytestmark = pytest.mark.browser

SITE = COMPOSE_SITES[0]
# Far from now, so neither schedule comes due while the test runs.
CONFIG_TIME = (datetime.now(timezone.utc) + timedelta(hours=12)).strftime("%H:%M")
WEEKLY_DAY = WEEKDAYS[(datetime.now(timezone.utc).weekday() + 3) % 7]


@pytest.fixture(scope="module")
def served_config():
    return {
        "schedules": [{"stack": "erp", "site": FM_SITE, "frequency": "daily", "time": CONFIG_TIME, "timezone": "UTC"}]
    }


def listed_schedules(page) -> list[dict]:
    """What the dashboard has stored, asked from the page itself (its session)."""
    answer = page.evaluate("() => fetch('/scheduler', {headers: {Accept: 'application/json'}}).then(r => r.json())")
    return answer["schedules"]


def test_schedules_are_added_checked_paused_and_removed_and_config_ones_stay(signed_in):
    page = signed_in.page
    with page.expect_navigation():
        page.locator("nav.nav").get_by_role("link", name="Schedules").click()
    assert page.url.endswith("/scheduler")
    signed_in.assert_clean()

    declared = page.locator("tr[data-source='config']")
    assert declared.count() == 1
    assert FM_SITE in declared.inner_text() and f"daily at {CONFIG_TIME}" in declared.inner_text()
    assert declared.get_by_role("button").count() == 0
    assert "change it in config.yaml" in declared.inner_text()
    assert page.locator("tr[data-source='ui']").count() == 0

    # A wrong time: the answer (400) is the form again, the error under the time field, input kept.
    form = page.locator("#schedule-form")
    form.locator("#sched-stack").select_option("prod")
    form.locator("#sched-site").fill(SITE)
    form.locator("#sched-frequency").select_option("weekly")
    form.locator("#sched-dow").select_option(WEEKLY_DAY)
    form.locator("#sched-time").fill("25:00")
    form.locator("#sched-tz").fill("UTC")
    with signed_in.expecting_http_status(400):
        form.get_by_role("button", name="Add schedule").click()
        error = page.locator("#schedule-form .field-error[data-field='time']")
        error.wait_for()
    assert "HH:MM" in error.inner_text()
    assert page.locator("#schedule-form .field-error").count() == 1
    assert page.locator("#sched-time").input_value() == "25:00"
    assert page.locator("#sched-site").input_value() == SITE
    assert page.locator("tr[data-source='ui']").count() == 0
    assert [s["source"] for s in listed_schedules(page)] == ["config"]
    signed_in.assert_clean()

    # Corrected, it is added (the other fields were kept) with its next three runs.
    page.locator("#sched-time").fill("03:15")
    page.locator("#schedule-form").get_by_role("button", name="Add schedule").click()
    added = page.locator("tr[data-source='ui']")
    added.wait_for()
    assert page.locator("#schedule-form .field-error").count() == 0
    assert "Schedule added" in page.locator("#scheduler-body .notice-ok").inner_text()
    assert SITE in added.inner_text() and "prod" in added.inner_text()
    runs = added.locator(".runs li").all_inner_texts()
    assert len(runs) == 3
    day = DAY_NAMES[WEEKLY_DAY][:3]
    assert all(t.startswith(day) and t.endswith("03:15 UTC") for t in runs), runs
    dates = [datetime.strptime(t[4:14], "%Y-%m-%d") for t in runs]
    assert [b - a for a, b in zip(dates, dates[1:])] == [timedelta(days=7)] * 2
    assert added.get_attribute("data-status") == "ok"
    schedule_id = added.get_attribute("data-schedule-id")
    signed_in.assert_clean()

    # Paused: the status says so and there are no next runs.
    added.get_by_role("button", name="Disable").click()
    paused = page.locator(f"tr[data-schedule-id='{schedule_id}'][data-status='disabled']")
    paused.wait_for()
    assert paused.locator(".badge").last.inner_text() == "disabled"
    assert paused.locator(".runs li").count() == 0
    assert paused.get_by_role("button", name="Enable").count() == 1
    signed_in.assert_clean()

    # Removed, after saying yes to the confirmation.
    messages = []

    def accept(dialog):
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    paused.get_by_role("button", name="Remove").click()
    page.locator(f"tr[data-schedule-id='{schedule_id}']").wait_for(state="detached")
    assert messages == [
        f"Remove the schedule for {SITE} on prod (weekly on {DAY_NAMES[WEEKLY_DAY]} at 03:15)? "
        "Its run history goes too."
    ]
    assert "Schedule removed" in page.locator("#scheduler-body .notice-ok").inner_text()
    assert page.locator("tr[data-source='config']").count() == 1
    assert [s["source"] for s in listed_schedules(page)] == ["config"]
    signed_in.assert_clean()

    # Every change is in the audit log.
    signed_in.goto("/audit")
    audited = page.locator("table.audit tr").all_inner_texts()
    for action in ("schedule_add", "schedule_disable", "schedule_remove"):
        assert any(action in row and f"prod/{SITE}" in row for row in audited), action
    assert any("schedule_add" in row and "invalid: time" in row for row in audited)


def test_the_schedules_page_fits_a_phone_screen_without_horizontal_scrolling(signed_in):
    signed_in.page.set_viewport_size({"width": 375, "height": 812})
    signed_in.goto("/scheduler")
    width, inner = signed_in.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"/scheduler is {width}px wide on a {inner}px screen"
