"""A new operator's first day in a real browser: every page of the navigation on a fresh install,
then every page again with data present (a backup, a finished job, audit rows), each answering
200 with no console error, uncaught error or CSP violation."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.world import COMPOSE_SITES

pytestmark = pytest.mark.browser

SITE, OTHER = COMPOSE_SITES


def import_set_waiting(served, site: str) -> str:
    """A backup bench made itself (as on another server), copied into ``_import/``; its set name."""
    world = served.world
    backups = world.doubles.volume_bench(world.compose_project) / "sites" / site / "private" / "backups"
    before = set(backups.glob("*")) if backups.is_dir() else set()
    argv = [world.docker, "compose", "--project-directory", str(world.compose_path), "exec", "-T", "backend"]
    result = subprocess.run(
        [*argv, "bench", "--site", site, "backup", "--with-files"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    incoming = Path(served.world.config["backups"]["base_path"]) / "_import"
    incoming.mkdir(parents=True, exist_ok=True)
    files = sorted(set(backups.glob("*")) - before)
    for path in files:
        shutil.copy(path, incoming / path.name)
    [name] = {re.match(r"(.+?)-(database|files|private-files|site_config_backup)\.", p.name).group(1) for p in files}
    return name


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

    # A schedule, added from the page's own session, and an import set waiting.
    added = page.evaluate(
        """() => fetch('/scheduler/add', {method: 'POST', headers: {
                 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content,
                 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json'},
               body: 'kind=backup&stack=prod&site=*&frequency=daily&time=03:00&timezone=UTC'}).then(r => r.status)"""
    )
    assert added in (200, 201), added
    import_name = import_set_waiting(served, OTHER)

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
        f"/imports/{import_name}",
        "/audit",
        "/audit?action=restart_stack",
        "/account",
        "/account/users",
    ):
        open_clean(signed_in, path)
    # The data was really there: the pages above showed it, not their empty states.
    signed_in.goto("/imports")
    assert page.locator(f"tr[data-import='{import_name}']").count() == 1
    signed_in.goto("/scheduler")
    assert "No backup schedules yet" not in page.locator("main").inner_text()
    signed_in.goto(f"/backups/prod/{SITE}")
    assert page.locator(f"tr[data-backup-id='{backup_id}']").count() == 1
