"""Restoring a site in a real browser, through the real agent over the doubles: from the backups
page to the restore page, a wrong confirmation refused under its field, the right one starting the
job and its live panel; afterwards the site's database holds the backup's data again. A backup also
restores onto a new site of the compose stack, and a backup made elsewhere is imported from the
imports page. A restore that fails, started by a direct agent API call, reaches the dashboard's
webhook as restore_failed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support.polling import wait_for
from support.webhook_receiver import WebhookReceiver
from support.world import COMPOSE_SITES

pytestmark = pytest.mark.browser

SITE = COMPOSE_SITES[0]
OTHER = COMPOSE_SITES[1]
RESTORE_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def hook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def served_config(hook):
    return {"notifications": {"webhook_url": hook.url, "events": ["restore_failed"]}}


def database_file(served, site: str) -> Path:
    world = served.world
    volume = world.doubles.volume_bench(world.compose_project)
    db_name = json.loads((volume / "sites" / site / "site_config.json").read_text())["db_name"]
    return world.doubles.db_server(world.compose_project).db_path(db_name)


def backup_now(served, site: str) -> str:
    status, answer = served.agent.request("POST", "/action", {"action": "backup_site", "stack": "prod", "site": site})
    assert status == 202, answer
    job = served.agent.wait_job(answer["job"]["id"], timeout=60)
    assert job["status"] == "succeeded", job
    status, listing = served.agent.request("GET", f"/backups/prod/{site}")
    return listing["backups"][0]["id"]


def job_ids(served) -> set[str]:
    return {job["id"] for job in served.agent.request("GET", "/jobs?limit=500")[1]["jobs"]}


def test_a_site_is_restored_from_the_backups_page_and_holds_the_backups_data_again(signed_in, served):
    page = signed_in.page
    database = database_file(served, SITE)
    backup_id = backup_now(served, SITE)
    backed_up = database.read_text()
    assert "original note 0 of" in backed_up
    # After the backup, the site's data changes (what the restore must undo).
    database.write_text(backed_up.replace("original note", "changed note"))

    signed_in.goto(f"/backups/prod/{SITE}")
    with page.expect_navigation():
        page.locator(f"tr[data-backup-id='{backup_id}']").get_by_role("link", name="Restore…").click()
    assert page.url.endswith(f"/restore/prod/{SITE}/{backup_id}")
    signed_in.assert_clean()
    assert "safety backup" in page.locator(".restore-summary").inner_text()
    assert "frappe, erpnext" in page.locator("[data-fact='apps']").inner_text()

    before = job_ids(served)
    form = page.locator("#restore-form")
    form.locator("#restore-form-confirm").fill("site1")
    with signed_in.expecting_http_status(400):
        form.get_by_role("button", name="Restore now").click()
        error = page.locator("#restore-form .field-error[data-field='confirm']")
        error.wait_for()
    assert f"type {SITE} exactly" in error.inner_text()
    assert job_ids(served) == before, "a wrong confirmation must start nothing"
    signed_in.assert_clean()

    form = page.locator("#restore-form")
    form.locator("#restore-form-confirm").fill(SITE)
    form.get_by_role("button", name="Restore now").click()
    # The form is replaced by the live job panel, which polls until the job has ended.
    panel = page.locator(".job-panel")
    panel.wait_for()
    assert panel.get_attribute("hx-trigger") == "every 1s"
    page.locator(".job-panel[data-status='succeeded'], .job-panel[data-status='failed']").wait_for(
        timeout=RESTORE_TIMEOUT_MS
    )
    job = served.agent.request("GET", f"/jobs/{panel.get_attribute('data-job-id')}")[1]
    assert job["action"] == "restore_site" and job["status"] == "succeeded", (
        job["message"] + "\n" + job["output"][-4000:]
    )
    assert panel.get_attribute("hx-trigger") is None, "a finished job panel must stop polling"
    signed_in.assert_clean()

    restored = database.read_text()
    assert "original note 0 of" in restored and "changed note" not in restored
    # The safety backup taken first holds the changed data and is labelled pre-restore.
    signed_in.goto(f"/backups/prod/{SITE}")
    assert page.locator("[data-label='pre-restore']").count() == 1

    signed_in.goto("/audit")
    row = page.locator("table.audit tr", has_text="restore_site").first
    assert f"prod/{SITE} from prod/{SITE} backup {backup_id}" in row.inner_text()
    assert "started" in row.inner_text()


def test_a_backup_is_restored_onto_a_new_site_of_the_compose_stack(signed_in, served):
    page = signed_in.page
    backup_id = backup_now(served, SITE)
    source = database_file(served, SITE).read_text()
    new_site = "copy.example.com"

    signed_in.goto(f"/restore/prod/{SITE}/{backup_id}")
    form = page.locator("#restore-form")
    form.locator("#restore-form-site").fill(new_site)
    form.locator("#restore-form-create").check()
    form.locator("#restore-form-confirm").fill(new_site)
    form.get_by_role("button", name="Restore now").click()
    panel = page.locator(".job-panel")
    panel.wait_for()
    page.locator(".job-panel[data-status='succeeded'], .job-panel[data-status='failed']").wait_for(
        timeout=RESTORE_TIMEOUT_MS
    )
    job = served.agent.request("GET", f"/jobs/{panel.get_attribute('data-job-id')}")[1]
    assert job["status"] == "succeeded", job["message"] + "\n" + job["output"][-4000:]
    signed_in.assert_clean()
    # The new site exists and holds the source site's backed-up data.
    restored = database_file(served, new_site).read_text()
    assert f"original note 0 of {SITE}" in restored
    assert restored.count("INSERT INTO `tabNote`") == source.count("INSERT INTO `tabNote`")


def bench_backup_elsewhere(served, site: str) -> list[Path]:
    """A backup made by bench itself (as on another server): its files, named as bench names them."""
    world = served.world
    backups = world.doubles.volume_bench(world.compose_project) / "sites" / site / "private" / "backups"
    before = set(backups.glob("*")) if backups.is_dir() else set()
    argv = [
        world.docker,
        "compose",
        "--project-directory",
        str(world.compose_path),
        "exec",
        "-T",
        "backend",
        "bench",
        "--site",
        site,
        "backup",
        "--with-files",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(set(backups.glob("*")) - before)


def test_a_backup_made_elsewhere_is_imported_from_the_imports_page(signed_in, served):
    page = signed_in.page
    files = bench_backup_elsewhere(served, OTHER)
    incoming = Path(served.world.config["backups"]["base_path"]) / "_import"
    incoming.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copy(path, incoming / path.name)
    # The set's name: everything bench put before the part ("-database.sql.gz", "-files.tar", ...).
    [name] = {re.match(r"(.+?)-(database|files|private-files|site_config_backup)\.", p.name).group(1) for p in files}

    with page.expect_navigation():
        page.locator("nav.nav").get_by_role("link", name="Imports").click()
    signed_in.assert_clean()
    row = page.locator(f"tr[data-import='{name}']")
    assert "ready" in row.inner_text()
    with page.expect_navigation():
        row.get_by_role("link", name="Import…").click()
    signed_in.assert_clean()
    form = page.locator("#import-form")
    # The target is guessed from the set's name (bench writes dots as underscores).
    assert form.locator("#import-form-site").input_value() == OTHER
    form.locator("#import-form-confirm").fill(OTHER)
    form.get_by_role("button", name="Import now").click()
    panel = page.locator(".job-panel")
    panel.wait_for()
    page.locator(".job-panel[data-status='succeeded'], .job-panel[data-status='failed']").wait_for(
        timeout=RESTORE_TIMEOUT_MS
    )
    job = served.agent.request("GET", f"/jobs/{panel.get_attribute('data-job-id')}")[1]
    assert job["action"] == "import_backup" and job["status"] == "succeeded", job["message"] + "\n" + job["output"]
    signed_in.assert_clean()

    signed_in.goto(f"/backups/prod/{OTHER}")
    assert page.locator("[data-label='imported']").count() == 1
    signed_in.goto("/audit")
    assert page.locator("table.audit tr", has_text="import_backup").first.inner_text().count(f"from import {name}") == 1


def test_a_failed_restore_started_through_the_agent_api_is_notified_by_the_dashboard(served, hook):
    backup_id = backup_now(served, SITE)
    served.world.doubles.set_faults(fail={"bench migrate": {"rc": 1, "stderr": "MigrationError: patch failed"}})
    try:
        status, answer = served.agent.request(
            "POST", "/action", {"action": "restore_site", "stack": "prod", "site": SITE, "backup": backup_id}
        )
        assert status == 202, answer
        job = served.agent.wait_job(answer["job"]["id"], timeout=90)
    finally:
        served.world.doubles.set_faults()
    assert job["status"] == "failed", job
    # The dashboard polls the agent's jobs every 10 s.
    wait_for(
        lambda: [p for p in hook.received if p["details"].get("job_id") == job["id"]],
        40,
        "the restore_failed notification",
    )
    [payload] = [p for p in hook.received if p["details"].get("job_id") == job["id"]]
    assert payload["event"] == "restore_failed"
    assert payload["details"]["stack"] == "prod" and payload["details"]["site"] == SITE
