"""Every action the agent runs, one row each: the single source the agent, the dashboard and the docs derive from.

A row (:class:`ActionSpec`) says what an action works on (its scope), which request fields it takes
and how they are checked, whether a fresh install allows it, how long it may run, what its job says
when it starts, which notification its failure raises and who on the dashboard may ask for it.
From these rows come the agent's request checks (agent/app.py), its dispatch (agent/action_registry.py:
the code of an action sits next to its ``@handles("name")``), the allow-list defaults and timeouts
(config.py), the dashboard's buttons, their routes and their authorisation (dashboard/views.py,
dashboard/pages_stacks.py, dashboard/authorize.py), the job names on its pages, the failed-job notifications (dashboard/job_watch.py), the dashboard tests'
fake agent and the action table in the docs (:func:`markdown_table`, written by packaging/gen_docs.py).

Adding an action: a row here and a module in fmappliance/agent/handlers/ with its ``@handles``.

A row with a ``verb`` is also a dashboard button (POST /stack/<stack>/<verb> or /site/<stack>/<site>/<verb>,
allowed from ``role`` up, with a fresh second factor when ``step_up``); dashboard/views.py:action_buttons
turns these fields into the buttons of a stack or site card, with no template naming an action:

- ``label``: the button's text ("Backup now");
- ``confirm``: the question the browser asks before posting, {stack} and {site} filled in ("" asks none);
- ``style``: its look, one of :data:`BUTTON_STYLES` ("" plain, "primary", "warn", "danger": app.css classes);
- ``title``: its tooltip ("" none);
- ``button_order``: the buttons of a stack or site are shown by this number, then in table order
  (the default puts a new button last).

``job_label`` is what the dashboard calls the action's jobs ("Migration of erp.example.com on prod
succeeded."); without one, the name in words ("Offsite copy").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fmappliance import wire

#: What an action works on: a whole stack, one site of a stack, or the whole appliance (no stack, no site).
STACK, SITE, GLOBAL = "stack", "site", "global"
#: Dashboard roles (the same names as config.ROLES), least to most privileged.
VIEWER, OPERATOR, ADMIN = "viewer", "operator", "admin"
#: A button's ``style``: plain, or one of the button classes of assets/static/app.css.
BUTTON_STYLES = ("", "primary", "warn", "danger")


@dataclass(frozen=True)
class Field:
    """A request field an action takes besides action, stack and site.

    ``problem(value)`` returns the sentence a 400 answers with, or None when the value is fine;
    it checks shape only (the agent checks names against the inventory when it plans the job).
    """

    name: str
    problem: Callable[[object], str | None]
    required: bool = False
    #: For the docs: what the field holds.
    doc: str = ""


@dataclass(frozen=True)
class ActionSpec:
    name: str
    scope: str
    #: The job's first message; {stack}, {site}, {backup} and {name} are filled in.
    started: str
    #: Seconds before the job's process group is killed (agent.action_timeouts overrides it).
    timeout: int
    #: In security.allowed_actions when the config does not list them.
    allowed_by_default: bool = False
    fields: tuple[Field, ...] = ()
    #: Allowed by default, and runnable at all, only when offsite copies are configured.
    needs_offsite: bool = False
    #: The notification event a failed job raises, whoever started it (None: not notified this way).
    failure_event: str | None = None
    #: The subject of that notification, before " failed"; {stack} and {site} are filled in.
    failure_subject: str = ""
    #: The least dashboard role that may ask for it through its button.
    role: str = ADMIN
    #: The dashboard button's verb: POST /stack/<stack>/<verb> or /site/<stack>/<site>/<verb> (None: no button).
    verb: str | None = None
    #: The button needs a freshly proved second factor (destructive).
    step_up: bool = False
    #: The button's text (every row with a verb has one).
    label: str = ""
    #: The question asked before the button posts; {stack} and {site} are filled in ("" asks none).
    confirm: str = ""
    #: The button's look: one of BUTTON_STYLES.
    style: str = ""
    #: The button's tooltip ("" none).
    title: str = ""
    #: Lower first among the buttons of a stack or site; equal ones in table order.
    button_order: int = 100
    #: What the dashboard calls its job ("Migration of erp.example.com …"); "" says the name in words.
    job_label: str = ""
    #: For the docs: what it does.
    doc: str = ""

    @property
    def job_name(self) -> str:
        return self.job_label or self.name.replace("_", " ").capitalize()

    @property
    def is_site_action(self) -> bool:
        return self.scope == SITE

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)


# ---------------------------------------------------------------------- field checks


def _label(value: object) -> str | None:
    if value in wire.CALLER_LABELS:
        return None
    return "label must be 'manual' or 'scheduled' (pre-restore, pre-update and imported are set by the agent itself)."


def _required_backup_id(value: object) -> str | None:
    if wire.is_valid_backup_id(value):
        return None
    return f"restore_site needs the field 'backup': a backup id like {wire.BACKUP_ID_EXAMPLE}."


def _optional_backup_id(value: object) -> str | None:
    if wire.is_valid_backup_id(value):
        return None
    return f"backup must be a backup id like {wire.BACKUP_ID_EXAMPLE} (or left out: the newest)."


def _from_stack(value: object) -> str | None:
    return None if isinstance(value, str) else "from_stack must be a text (a stack name)."


def _from_site(value: object) -> str | None:
    if not isinstance(value, str):
        return "from_site must be a text (a site name)."
    return None if wire.is_valid_site_name(value) else "That is not a valid site name."


def _restore_source(value: object) -> str | None:
    if value in wire.BACKUP_SOURCES:
        return None
    return "source must be 'local' (a published backup) or 'offsite' (its restic copy)."


def _test_source(value: object) -> str | None:
    return None if value in wire.BACKUP_SOURCES else "source must be 'local' or 'offsite'."


def _bool(value: object) -> str | None:
    return None if isinstance(value, bool) else "create_site must be true or false."


def _import_set(value: object) -> str | None:
    if isinstance(value, str) and wire.IMPORT_SET_NAME.fullmatch(value):
        return None
    return (
        "import_backup needs the field 'name': an import set name as GET /imports lists it "
        "(like 20261125_020003-erp_example_com)."
    )


# ---------------------------------------------------------------------- the table

ACTION_SPECS: tuple[ActionSpec, ...] = (
    ActionSpec(
        "restart_stack",
        STACK,
        "Restart of stack {stack} started.",
        600,
        allowed_by_default=True,
        role=OPERATOR,
        verb="restart",
        label="Restart",
        confirm="Restart stack {stack}? All its containers restart, the database included; sites are briefly down.",
        button_order=10,
        job_label="Restart",
        doc="Restart every service of the stack.",
    ),
    ActionSpec(
        "update_stack",
        STACK,
        "Update of stack {stack} started; every site is backed up first.",
        3600,
        allowed_by_default=True,
        failure_event="update_failed",
        failure_subject="Update of {stack}",
        role=ADMIN,
        verb="update",
        step_up=True,
        label="Update",
        confirm="Update stack {stack}? It pulls new images and restarts it; sites are briefly down.",
        style="warn",
        button_order=20,
        job_label="Update",
        doc="Back up every site, pull and restart, health-check; roll back on failure.",
    ),
    ActionSpec(
        "restart_site",
        SITE,
        "Restart of {site} on {stack} started.",
        600,
        allowed_by_default=True,
        role=OPERATOR,
        verb="restart",
        label="Restart",
        confirm="Restart site {site}? Its services restart; the site is briefly down.",
        button_order=20,
        job_label="Restart",
        doc="Restart the services that serve the site.",
    ),
    ActionSpec(
        "migrate_site",
        SITE,
        "Migration of {site} on {stack} started.",
        3600,
        allowed_by_default=True,
        role=OPERATOR,
        verb="migrate",
        label="Migrate",
        confirm="Migrate site {site}? It runs bench migrate.",
        style="warn",
        button_order=40,
        job_label="Migration",
        doc="`bench --site S migrate`.",
    ),
    ActionSpec(
        "backup_site",
        SITE,
        "Backup of {site} on {stack} started.",
        7200,
        allowed_by_default=True,
        fields=(Field("label", _label, doc="'manual' (default) or 'scheduled'"),),
        role=OPERATOR,
        verb="backup",
        label="Backup now",
        style="primary",
        button_order=10,
        job_label="Backup",
        doc="`bench backup --with-files`, verified and published, then retention.",
    ),
    ActionSpec(
        "start_stack",
        STACK,
        "Start of stack {stack} started.",
        600,
        job_label="Start",
        doc="Start the stack's services.",
    ),
    ActionSpec(
        "stop_stack", STACK, "Stop of stack {stack} started.", 600, job_label="Stop", doc="Stop the stack's services."
    ),
    ActionSpec(
        "restore_site",
        SITE,
        "Restore of backup {backup} onto {site} on {stack} started.",
        7200,
        allowed_by_default=True,
        fields=(
            Field("backup", _required_backup_id, required=True, doc="the backup id"),
            Field("from_stack", _from_stack, doc="the stack the backup belongs to (default: stack)"),
            Field("from_site", _from_site, doc="the site the backup belongs to (default: site)"),
            Field("create_site", _bool, doc="true: restore into a new site named site"),
            Field("source", _restore_source, doc="'local' (default) or 'offsite'"),
        ),
        failure_event="restore_failed",
        failure_subject="Restore of {site} on {stack}",
        role=ADMIN,  # an operator may restore onto a new site (dashboard/authorize.py's restore rule)
        job_label="Restore",
        doc="Safety backup, then restore the backup onto the site (or, for an operator too, a new one).",
    ),
    ActionSpec(
        "import_backup",
        SITE,
        "Import of {name} as a backup of {site} on {stack} started.",
        3600,
        allowed_by_default=True,
        fields=(Field("name", _import_set, required=True, doc="an import set as GET /imports lists it"),),
        role=ADMIN,
        job_label="Import",
        doc="Verify an uploaded bench backup set and publish it as a backup of the site.",
    ),
    ActionSpec(
        "test_restore",
        SITE,
        "Restore test of backup {backup} of {site} on {stack} started (in a throwaway site).",
        7200,
        allowed_by_default=True,
        fields=(
            Field("backup", _optional_backup_id, doc="the backup id (default: the newest verified)"),
            Field("source", _test_source, doc="'local' (default) or 'offsite'"),
        ),
        failure_event="restore_test_failed",
        failure_subject="Restore test of {site} on {stack}",
        role=OPERATOR,
        verb="test-restore",
        label="Test restore",
        title="Restore the newest verified backup into a throwaway site and check it; the live site is not touched",
        button_order=30,
        doc="Restore a backup into a throwaway site, check it, drop it; the outcome is kept per site.",
    ),
    ActionSpec(
        "offsite_copy",
        SITE,
        "Offsite copy of {site} on {stack} started.",
        21600,
        needs_offsite=True,
        failure_event="offsite_failed",
        failure_subject="Offsite copy of {stack}",
        doc="Copy the site's new backups to the restic repository.",
    ),
    ActionSpec(
        "offsite_check",
        GLOBAL,
        "Check of the offsite repository started.",
        21600,
        needs_offsite=True,
        failure_event="offsite_check_failed",
        failure_subject="Offsite check",
        doc="`restic check` of the offsite repository.",
    ),
)

SPECS: dict[str, ActionSpec] = {spec.name: spec for spec in ACTION_SPECS}
#: Every action name, in table order (config's security.allowed_actions picks from these).
ACTIONS: tuple[str, ...] = tuple(SPECS)
SITE_ACTIONS = frozenset(spec.name for spec in ACTION_SPECS if spec.scope == SITE)
GLOBAL_ACTIONS = frozenset(spec.name for spec in ACTION_SPECS if spec.scope == GLOBAL)
DEFAULT_ALLOWED_ACTIONS = [spec.name for spec in ACTION_SPECS if spec.allowed_by_default]
OFFSITE_ACTIONS = [spec.name for spec in ACTION_SPECS if spec.needs_offsite]
DEFAULT_ACTION_TIMEOUTS = {spec.name: spec.timeout for spec in ACTION_SPECS}
#: Failure notification event -> the action it belongs to.
FAILED_JOB_EVENTS = tuple(spec.failure_event for spec in ACTION_SPECS if spec.failure_event)
EVENT_OF_ACTION = {spec.name: spec.failure_event for spec in ACTION_SPECS if spec.failure_event}


def spec_of(action: str) -> ActionSpec | None:
    return SPECS.get(action)


def buttons(scope: str) -> dict[str, str]:
    """The dashboard's button verbs of a scope -> the action each asks for."""
    return {spec.verb: spec.name for spec in ACTION_SPECS if spec.scope == scope and spec.verb}


def button_specs(scope: str) -> list[ActionSpec]:
    """The rows with a dashboard button of a scope (stack or site), in the order the buttons are shown."""
    found = [spec for spec in ACTION_SPECS if spec.scope == scope and spec.verb]
    return sorted(found, key=lambda spec: spec.button_order)  # stable: equal ones keep table order


def accepted_fields(action: str) -> tuple[str, ...]:
    spec = SPECS.get(action)
    return (*wire.ACTION_FIELDS, *(spec.field_names if spec else ()))


def request_problem(data: dict) -> str | None:
    """The first thing wrong with an action request body (a JSON object), as a sentence, or None.

    Shape only: allow-list, inventory and backups are the agent's to check afterwards.
    """
    action = data.get("action")
    accepted = accepted_fields(action if isinstance(action, str) else "")
    unexpected = sorted(k for k in data if k not in accepted)
    if unexpected:
        return (
            "Unexpected field(s): "
            + ", ".join(repr(k)[:40] for k in unexpected)
            + "; accepted here: "
            + ", ".join(accepted)
            + "."
        )
    if not isinstance(action, str) or not action:
        return "The field 'action' is missing (a text naming the action)."
    spec = SPECS.get(action)
    if spec is None:
        return f"Unknown action {action[:40]!r}; known actions: {', '.join(ACTIONS)}."
    if spec.scope == GLOBAL:
        if data.get("stack") is not None or data.get("site") is not None:
            return f"The action {action} works on the whole appliance and takes no stack or site."
        return None
    if not isinstance(data.get("stack"), str):
        return "The field 'stack' is missing (the name of a stack)."
    if spec.scope == SITE:
        if not isinstance(data.get("site"), str):
            return f"The action {action} needs the field 'site' (a site name)."
    elif data.get("site") is not None:
        return f"The action {action} works on a whole stack and takes no 'site' field."
    for field in spec.fields:
        if field.name in data or field.required:
            problem = field.problem(data.get(field.name))
            if problem:
                return problem
    return None


def markdown_table() -> str:
    """The docs' action table (packaging/gen_docs.py writes it between its markers)."""
    lines = [
        "| Action | Works on | Extra fields | Allowed by default | Timeout | Least dashboard role | Failure notifies |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in ACTION_SPECS:
        fields = "; ".join(f"`{f.name}`{' (required)' if f.required else ''}: {f.doc}" for f in spec.fields) or "—"
        default = "with offsite" if spec.needs_offsite else ("yes" if spec.allowed_by_default else "no")
        role = spec.role + (f" (button `{spec.verb}`)" if spec.verb else "")
        lines.append(
            f"| `{spec.name}` | {spec.scope} | {fields} | {default} | {spec.timeout} s | {role} | "
            f"{'`' + spec.failure_event + '`' if spec.failure_event else '—'} |"
        )
    return "\n".join(lines) + "\n"
