"""The action table is the one source: the agent's handlers, the config defaults, the dashboard's buttons and
authorisation, the notifications and the docs all agree with it (no process is started here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fmappliance import actions_table, config, wire
from fmappliance.actions_table import ACTION_SPECS, SPECS, request_problem

ROOT = Path(__file__).resolve().parent.parent


def test_every_row_has_exactly_one_handler_and_every_handler_a_row():
    from fmappliance.agent import action_registry

    action_registry.check_complete()
    assert set(action_registry._HANDLERS) == set(SPECS)


def test_a_handler_for_an_action_the_table_does_not_know_is_refused_at_import():
    from fmappliance.agent.action_registry import handles

    with pytest.raises(RuntimeError, match="no row in fmappliance/actions_table.py"):
        handles("reboot_host")(lambda actions, ctx, request: None)
    with pytest.raises(RuntimeError, match="already has a handler"):
        handles("backup_site")(lambda actions, ctx, request: None)


def test_config_defaults_come_from_the_table():
    assert config.DEFAULT_ALLOWED_ACTIONS == [s.name for s in ACTION_SPECS if s.allowed_by_default]
    assert "start_stack" not in config.DEFAULT_ALLOWED_ACTIONS and "offsite_copy" not in config.DEFAULT_ALLOWED_ACTIONS
    assert config.DEFAULT_ACTION_TIMEOUTS == {s.name: s.timeout for s in ACTION_SPECS}
    assert set(config.FAILED_JOB_EVENTS) <= set(config.NOTIFICATION_EVENTS)
    assert set(config.FAILED_JOB_EVENTS) == {s.failure_event for s in ACTION_SPECS if s.failure_event}


def test_the_dashboard_buttons_and_their_roles_come_from_the_table():
    from fmappliance.dashboard import authorize, job_watch, pages_stacks

    assert pages_stacks.STACK_VERBS.items() >= {"restart": "restart_stack", "update": "update_stack"}.items()
    assert (
        pages_stacks.SITE_VERBS.items()
        >= {
            "restart": "restart_site",
            "migrate": "migrate_site",
            "backup": "backup_site",
            "test-restore": "test_restore",
        }.items()
    )
    assert {**pages_stacks.STACK_VERBS, **pages_stacks.SITE_VERBS}.keys() >= {s.verb for s in ACTION_SPECS if s.verb}
    for spec in ACTION_SPECS:
        if spec.verb is None:
            continue
        path = f"/stack/prod/{spec.verb}" if spec.scope == actions_table.STACK else f"/site/prod/s.example/{spec.verb}"
        found = authorize.find_rule("POST", path)
        assert found is not None and found.role == spec.role and found.step_up == spec.step_up, spec.name
    assert (
        job_watch.EVENT_OF_ACTION.items()
        >= {
            "update_stack": "update_failed",
            "restore_site": "restore_failed",
            "test_restore": "restore_test_failed",
            "offsite_copy": "offsite_failed",
            "offsite_check": "offsite_check_failed",
        }.items()
    )
    assert job_watch._subject({"action": "test_restore", "stack": "prod", "site": "a.example"}) == (
        "Restore test of a.example on prod failed"
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"action": "backup_site", "stack": "prod", "site": "a.example"}, None),
        ({"action": "offsite_check"}, None),
        ({"action": "restore_site", "stack": "p", "site": "s", "backup": wire.BACKUP_ID_EXAMPLE}, None),
        ({"stack": "prod"}, "The field 'action' is missing (a text naming the action)."),
        ({"action": "backup_site", "stack": "prod"}, "The action backup_site needs the field 'site' (a site name)."),
        (
            {"action": "backup_site", "stack": "prod", "site": "s", "label": "pre-update"},
            "label must be 'manual' or 'scheduled' (pre-restore, pre-update and imported are set by the agent itself).",
        ),
        (
            {"action": "test_restore", "stack": "prod", "site": "s", "extra": 1},
            "Unexpected field(s): 'extra'; accepted here: action, stack, site, backup, source.",
        ),
        (
            {"action": "restore_site", "stack": "p", "site": "s", "backup": "b", "create_site": "yes"},
            "restore_site needs the field 'backup': a backup id like 2026-01-13_02-00-03.",
        ),
        (
            {"action": "offsite_check", "stack": "prod"},
            "The action offsite_check works on the whole appliance and takes no stack or site.",
        ),
    ],
)
def test_request_shapes_are_checked_from_the_table(body, problem):
    assert request_problem(body) == problem


def test_the_docs_action_table_is_generated_from_the_table():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    holding = [p for p in pages if "<!-- actions-table:start -->" in p.read_text()]
    assert len(holding) == 1, "exactly one page holds the generated action table"
    text = holding[0].read_text()
    block = text.split("<!-- actions-table:start -->\n", 1)[1].split("<!-- actions-table:end -->", 1)[0]
    assert block == actions_table.markdown_table(), "regenerate it: python packaging/gen_docs.py"


def test_the_wire_module_names_the_job_fields_and_statuses_the_api_documents():
    from support.agent_contract import JOB_KEYS

    assert set(wire.JOB_FIELDS) == JOB_KEYS
    assert wire.JOB_STATUSES == ("queued", "running", "succeeded", "failed")
    assert set(wire.UNFINISHED) | set(wire.FINISHED) == set(wire.JOB_STATUSES)
    assert wire.backup_time("2026-01-13_02-00-03") == "2026-01-13T02:00:03Z"


def test_every_button_row_says_what_its_button_shows():
    for spec in ACTION_SPECS:
        if spec.verb is None:
            assert not (spec.label or spec.confirm or spec.title), spec.name
            continue
        assert spec.label and spec.style in actions_table.BUTTON_STYLES, spec.name
        spec.confirm.format(stack="prod", site="a.example")  # only {stack} and {site} to fill in


def test_the_dashboard_names_jobs_from_the_table():
    from fmappliance.dashboard import views

    assert views.action_name("migrate_site") == "Migration" and views.action_name("backup_site") == "Backup"
    assert views.action_name("offsite_copy") == "Offsite copy" and views.action_name("test_restore") == "Test restore"
    assert views.action_name("reboot_host") == "Reboot host"  # an action this dashboard does not know yet
    job = {"action": "migrate_site", "message": "migrate_site on prod/a.example succeeded."}
    assert views.job_message(job) == "Migration of prod/a.example succeeded."


def test_a_new_row_with_a_verb_is_a_button_on_the_page_without_a_template_change(monkeypatch):
    from fmappliance.dashboard import views
    from fmappliance.dashboard.templates import Templates

    prune = actions_table.ActionSpec(
        "prune_site",
        actions_table.SITE,
        "Prune of {site} on {stack} started.",
        600,
        role=actions_table.OPERATOR,
        verb="prune",
        label="Prune",
        confirm="Prune site {site} of {stack}? Old backups go.",
        style="danger",
        button_order=35,
    )
    monkeypatch.setattr(actions_table, "ACTION_SPECS", (*ACTION_SPECS, prune))
    shaped = views.shape_stack({"name": "prod", "status": "running", "sites": ["a.example", "b.example"]}, None)
    refused = {"/site/prod/b.example/backup", "/site/prod/b.example/restart", "/site/prod/b.example/migrate"}
    refused |= {"/site/prod/b.example/test-restore", "/site/prod/b.example/prune", "/stack/prod/update"}

    def can(method, url):
        return method == "POST" and url not in refused

    stack = views.with_buttons(can, shaped)
    html = Templates().render(
        "stack", stack=stack, jobs=[], name="prod", csrf_token="TOKEN", return_to="/stack/prod", can=can
    )
    row = html.split('<tr data-site="a.example">')[1].split("</tr>")[0]
    labels = re.findall(r"<button [^>]*>([^<]*)</button>", row)
    assert labels == ["Backup now", "Restart", "Test restore", "Prune", "Migrate"]  # button_order, then table order
    assert (
        '<button type="submit" class="danger" formaction="/site/prod/a.example/prune" '
        'hx-post="/site/prod/a.example/prune" hx-confirm="Prune site a.example of prod? Old backups go.">Prune</button>'
    ) in row
    assert '<form class="actions" method="post" action="/site/prod/a.example/backup">' in row
    assert '<input type="hidden" name="csrf_token" value="TOKEN">' in row
    # What the session may not use is not shown; a site with nothing left says so.
    other = html.split('<tr data-site="b.example">')[1].split("</tr>")[0]
    assert "<button" not in other and '<span class="muted">view only</span>' in other
    head = html.split('<div class="page-head">')[1].split("</div>")[0]
    assert re.findall(r"<button [^>]*>([^<]*)</button>", head) == ["Restart"]
