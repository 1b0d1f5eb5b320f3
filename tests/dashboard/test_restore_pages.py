"""Restoring a backup and importing one from the dashboard: what the pages say, the typed
confirmation, what is sent to the agent, and the audit rows."""

from __future__ import annotations

import html
import re

import pytest

SITE = "site1.example.com"
OTHER = "site2.example.com"
BACKUP = "2026-11-25_02-00-03"
RESTORE_URL = f"/restore/prod/{SITE}/{BACKUP}"


@pytest.fixture
def with_backup(fake_agent):
    fake_agent.add_backup(
        "prod",
        SITE,
        BACKUP,
        {f"{BACKUP}.sql.gz": b"dump" * 1000, f"{BACKUP}.files.tar": b"t" * 500},
        label="scheduled",
        apps=["frappe", "erpnext"],
    )
    return fake_agent


def posts(fake_agent) -> list[dict]:
    return [body for method, path, body in fake_agent.requests if method == "POST" and path == "/action"]


def field_error(page: str, field: str) -> str:
    match = re.search(rf'<p class="field-error" data-field="{field}">([^<]*)</p>', page)
    return html.unescape(match.group(1)) if match else ""


def restore(client, url=RESTORE_URL, **fields):
    token = client.page_token(url)
    return client.post(url, data={"csrf_token": token, **fields})


def test_the_backups_page_links_each_backup_to_its_restore_page_and_shows_its_label(logged_in, with_backup):
    page = logged_in.get(f"/backups/prod/{SITE}").text
    assert f'href="/restore/prod/{SITE}/{BACKUP}"' in page
    assert 'data-label="scheduled"' in page


def test_the_restore_page_says_what_will_happen(logged_in, with_backup):
    response = logged_in.get(RESTORE_URL)
    assert response.status == 200
    text = response.text
    assert re.search(r'data-fact="size">\d+\.\d KB', text)
    assert "frappe, erpnext" in text
    assert f"{SITE} on prod (this site)" in text
    assert "safety backup" in text
    # The target choices: every stack (with its type) and a new site of a compose stack.
    assert '<option value="prod" selected>prod (compose)</option>' in text
    assert '<option value="erp">erp (Frappe Manager bench)</option>' in text
    assert 'name="create_site"' in text and 'name="confirm"' in text


def test_an_older_backup_without_apps_says_they_are_not_checked(logged_in, fake_agent):
    fake_agent.add_backup("prod", SITE, BACKUP, {f"{BACKUP}.sql.gz": b"dump"})
    assert "not recorded in this (older) backup" in logged_in.get(RESTORE_URL).text


def test_an_unknown_backup_is_a_404_with_a_sentence(logged_in, with_backup):
    response = logged_in.get(f"/restore/prod/{SITE}/2020-01-01_00-00-00")
    assert response.status == 404
    assert "There is no backup 2020-01-01_00-00-00" in response.text


@pytest.mark.parametrize(
    "url", [f"/restore/prod/{SITE}/not-an-id", f"/restore/bad..name/{SITE}/{BACKUP}", f"/restore/prod/-x/{BACKUP}"]
)
def test_malformed_names_are_refused(logged_in, url):
    assert logged_in.get(url).status == 400


def test_a_wrong_confirmation_is_refused_under_the_field_and_starts_nothing(logged_in, with_backup):
    response = restore(logged_in, target_stack="prod", target_site=SITE, confirm="site1.example")
    assert response.status == 400
    assert (
        field_error(response.text, "confirm") == f"That is not the target site's name; type {SITE} exactly to confirm."
    )
    # The page still describes the backup, and the chosen target is kept.
    assert "frappe, erpnext" in response.text and f'value="{SITE}"' in response.text
    assert posts(with_backup) == []
    row = logged_in.app.ctx.audit.recent()[0]
    assert (row["action"], row["result"][:8]) == ("restore_site", "refused:")


def test_an_empty_confirmation_is_refused(logged_in, with_backup):
    response = restore(logged_in, target_stack="prod", target_site=SITE, confirm="")
    assert response.status == 400 and field_error(response.text, "confirm")
    assert posts(with_backup) == []


def test_restoring_onto_the_same_site_starts_the_job_and_shows_its_panel(logged_in, with_backup):
    response = restore(logged_in, target_stack="prod", target_site=SITE, confirm=SITE)
    assert response.status == 303
    assert posts(with_backup) == [{"action": "restore_site", "stack": "prod", "site": SITE, "backup": BACKUP}]
    job_page = logged_in.get(response.header("Location"))
    assert 'class="job-panel"' in job_page.text and "<strong>Restore</strong>" in job_page.text
    row = logged_in.app.ctx.audit.recent()[0]
    assert row["action"] == "restore_site" and row["result"] == "started" and row["job_id"]
    assert row["target"] == f"prod/{SITE} from prod/{SITE} backup {BACKUP}"


def test_restoring_onto_another_site_of_another_stack_names_the_source(logged_in, with_backup):
    response = restore(logged_in, target_stack="erp", target_site="erp.example.com", confirm="erp.example.com")
    assert response.status == 303
    assert posts(with_backup) == [
        {
            "action": "restore_site",
            "stack": "erp",
            "site": "erp.example.com",
            "backup": BACKUP,
            "from_stack": "prod",
            "from_site": SITE,
        }
    ]


def test_a_new_site_of_a_compose_stack_is_created_first(logged_in, with_backup):
    response = restore(
        logged_in, target_stack="prod", target_site="new.example.com", create_site="1", confirm="new.example.com"
    )
    assert response.status == 303
    assert posts(with_backup) == [
        {
            "action": "restore_site",
            "stack": "prod",
            "site": "new.example.com",
            "backup": BACKUP,
            "from_stack": "prod",
            "from_site": SITE,
            "create_site": True,
        }
    ]


@pytest.mark.parametrize(
    "fields,field,message",
    [
        (
            {"target_stack": "erp", "target_site": "new.example.com", "create_site": "1"},
            "create_site",
            "Frappe Manager bench",
        ),
        ({"target_stack": "prod", "target_site": OTHER, "create_site": "1"}, "create_site", "already exists"),
        (
            {"target_stack": "prod", "target_site": "nope.example.com"},
            "target_site",
            "There is no site nope.example.com on prod",
        ),
        ({"target_stack": "nostack", "target_site": SITE}, "target_stack", "There is no stack named nostack"),
    ],
)
def test_impossible_targets_are_refused_under_their_field(logged_in, with_backup, fields, field, message):
    response = restore(logged_in, confirm=fields["target_site"], **fields)
    assert response.status == 400
    assert message in field_error(response.text, field)
    assert posts(with_backup) == []


def test_htmx_answers_the_form_with_errors_or_the_live_job_panel(logged_in, with_backup):
    token = logged_in.page_token(RESTORE_URL)
    wrong = logged_in.post(
        RESTORE_URL,
        data={"csrf_token": token, "target_stack": "prod", "target_site": SITE, "confirm": "x"},
        headers={"HX-Request": "true"},
    )
    assert wrong.status == 400
    assert wrong.text.startswith('<form id="restore-form"') and field_error(wrong.text, "confirm")
    right = logged_in.post(
        RESTORE_URL,
        data={"csrf_token": token, "target_stack": "prod", "target_site": SITE, "confirm": SITE},
        headers={"HX-Request": "true"},
    )
    assert right.status == 200
    assert re.search(r'class="job-panel"[^>]*data-status="queued"', right.text)
    assert 'hx-trigger="every 1s"' in right.text


def test_json_clients_get_the_job_or_the_errors(logged_in, with_backup):
    token = logged_in.page_token(RESTORE_URL)
    headers = {"X-CSRF-Token": token, "Accept": "application/json"}
    wrong = logged_in.post(
        RESTORE_URL, json={"target_stack": "prod", "target_site": SITE, "confirm": "nope"}, headers=headers
    )
    assert wrong.status == 400 and "confirm" in wrong.json()["errors"]
    right = logged_in.post(
        RESTORE_URL,
        json={"target_stack": "prod", "target_site": "n.example.com", "create_site": True, "confirm": "n.example.com"},
        headers=headers,
    )
    assert right.status == 202 and right.json()["job"]["action"] == "restore_site"
    assert posts(with_backup)[-1]["create_site"] is True


def test_an_agent_refusal_is_shown_on_the_form_and_audited(logged_in, with_backup):
    with_backup.allowed_actions.discard("restore_site")
    response = restore(logged_in, target_stack="prod", target_site=SITE, confirm=SITE)
    assert response.status == 403
    assert "not allowed on this server (security.allowed_actions)" in response.text
    row = logged_in.app.ctx.audit.recent()[0]
    assert row["action"] == "restore_site" and row["result"].startswith("failed: ")


def test_a_restore_post_needs_the_csrf_token(logged_in, with_backup):
    response = logged_in.post(RESTORE_URL, data={"target_stack": "prod", "target_site": SITE, "confirm": SITE})
    assert response.status == 403
    assert posts(with_backup) == []


def test_the_restore_page_needs_a_session(client, with_backup):
    assert client.get(RESTORE_URL).status == 303


# ---- imports ----------------------------------------------------------------------------

IMPORT = "20261125_020003-site2_example_com"


@pytest.fixture
def with_imports(fake_agent):
    fake_agent.imports = [
        {
            "name": IMPORT,
            "files": [
                {"name": f"{IMPORT}-database.sql.gz", "size": 2048},
                {"name": f"{IMPORT}-files.tar", "size": 10240},
            ],
            "problems": [],
        },
        {
            "name": "20261101_000000-broken",
            "files": [{"name": "20261101_000000-broken-database.sql.gz", "size": 10}],
            "problems": ["The dump is cut short: it has no '-- Dump completed' line."],
        },
    ]
    return fake_agent


def test_the_imports_page_lists_sets_with_their_problems(logged_in, with_imports):
    page = logged_in.get("/imports").text
    assert f'href="/imports/{IMPORT}"' in page
    assert "The dump is cut short: it has no &#039;-- Dump completed&#039; line." in page
    assert 'href="/imports/20261101_000000-broken"' not in page
    assert "/_import/" in page


def test_the_imports_page_of_a_fresh_install_says_nothing_is_waiting(logged_in, fake_agent):
    fake_agent.imports = []
    response = logged_in.get("/imports")
    assert response.status == 200, response.text
    assert "Nothing is waiting in" in response.text


def test_the_import_page_guesses_the_target_site_from_the_set_name(logged_in, with_imports):
    page = logged_in.get(f"/imports/{IMPORT}").text
    assert f'name="target_site" value="{OTHER}"' in page
    assert 'name="create_site"' not in page


def test_an_import_needs_the_typed_site_name_then_starts_import_backup(logged_in, with_imports):
    url = f"/imports/{IMPORT}"
    token = logged_in.page_token(url)
    wrong = logged_in.post(
        url, data={"csrf_token": token, "target_stack": "prod", "target_site": OTHER, "confirm": SITE}
    )
    assert wrong.status == 400 and field_error(wrong.text, "confirm")
    assert posts(with_imports) == []
    right = logged_in.post(
        url, data={"csrf_token": token, "target_stack": "prod", "target_site": OTHER, "confirm": OTHER}
    )
    assert right.status == 303
    assert posts(with_imports) == [{"action": "import_backup", "stack": "prod", "site": OTHER, "name": IMPORT}]
    rows = logged_in.app.ctx.audit.recent()
    assert [r["action"] for r in rows[:2]] == ["import_backup", "import_backup"]
    assert rows[0]["result"] == "started" and rows[1]["result"].startswith("refused:")


def test_an_unknown_import_set_is_a_404(logged_in, with_imports):
    assert logged_in.get("/imports/20200101_000000-nothing").status == 404


def test_imports_answer_json(logged_in, with_imports):
    body = logged_in.get("/imports", headers={"Accept": "application/json"}).json()
    assert [i["name"] for i in body["imports"]] == [IMPORT, "20261101_000000-broken"]


def test_restore_now_is_in_the_danger_style_and_its_summary_is_read_again_after_the_job(logged_in, with_backup):
    page = logged_in.get(f"/restore/prod/{SITE}/{BACKUP}").text
    assert '<button type="submit" class="danger">Restore now</button>' in page
    assert 'id="restore-summary" data-refresh' in page
