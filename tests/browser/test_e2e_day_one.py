"""A new operator's first day in a real browser: every page of the navigation on a fresh install,
then every page again with data present (a backup, a finished job, audit rows), each answering
200 with no console error, uncaught error or CSP violation."""

from __future__ import annotations

import pytest
from support.world import COMPOSE_SITES

pytestmark = pytest.mark.browser

SITE = COMPOSE_SITES[0]


def nav_paths(page) -> list[str]:
    hrefs = page.locator("header nav a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    return [h for h in hrefs if h and h.startswith("/")]


def open_clean(watch, path: str) -> None:
    response = watch.goto(path)
    assert response is not None and response.status == 200, f"{path} answered {response and response.status}"
    assert not watch.page.locator("h1", has_text="Internal").count(), path
    # Fragments htmx loads after the page (the host panel) must be clean too.
    watch.page.wait_for_load_state("networkidle")
    watch.assert_clean()


def test_every_page_of_the_navigation_opens_on_a_fresh_install(signed_in):
    paths = nav_paths(signed_in.page)
    assert {"/dashboard", "/scheduler", "/imports", "/audit", "/account"} <= set(paths), paths
    for path in paths:
        open_clean(signed_in, path)
    # /imports on a fresh install: nothing waiting in _import/ yet, said in a sentence.
    signed_in.goto("/imports")
    assert "Nothing is waiting in" in signed_in.page.locator("main").inner_text()


def test_every_page_opens_with_data_present(signed_in, served):
    agent = served.agent
    status, answer = agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
    assert status == 202, answer
    job = agent.wait_job(answer["job"]["id"], timeout=60)
    assert job["status"] == "succeeded", job
    backup_id = agent.request("GET", f"/backups/prod/{SITE}")[1]["backups"][0]["id"]

    # Something in the audit log, from the dashboard itself.
    page = signed_in.page
    signed_in.goto("/stack/erp")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator(".page-head").get_by_role("button", name="Restart").click()
    page.locator("#action-results .job-panel[data-status='succeeded']").wait_for()
    signed_in.assert_clean()

    for path in (
        "/dashboard",
        "/stack/prod",
        "/stack/erp",
        "/stack/prod/logs",
        f"/backups/prod/{SITE}",
        f"/restore/prod/{SITE}/{backup_id}",
        f"/jobs/{job['id']}",
        "/scheduler",
        "/imports",
        "/audit",
        "/account",
        "/account/users",
    ):
        open_clean(signed_in, path)
