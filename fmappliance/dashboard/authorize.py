"""Who may do what: one table of (methods, path) -> least role, checked before every route.

Roles are ordered ``viewer < operator < admin`` (a bare hash in ``dashboard.credentials``
is an admin).  Adding a route is one line in ``RULES``.  A request no line matches is
refused when it is not a GET/HEAD (deny by default for anything that changes state);
an unmatched GET needs a signed-in viewer.

A rule's ``role`` may be a function of the request (:class:`Facts`): a restore needs an
admin unless it creates a new site; live logs need an operator unless ``dashboard.viewer_logs``.  ``step_up`` (a bool or such a function) marks
destructive actions that need a freshly proved factor (see :data:`STEP_UP_SECONDS`).
``enrolling`` marks what a user who still has to set up a second factor may reach.

Pages use :func:`allows` (through ``ctx.can``) to show only the buttons a role may use,
so buttons and enforcement come from this one table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from fmappliance.actions_table import ACTION_SPECS, STACK
from fmappliance.config import ROLES

PUBLIC = "public"  # no session needed (the route checks its own token, if any)
VIEWER, OPERATOR, ADMIN = ROLES
RANK = {role: i for i, role in enumerate(ROLES)}
#: A destructive action asks for a fresh code when the session's last one is older than this.
STEP_UP_SECONDS = 5 * 60

_SEGMENT = r"[^/]+"
_TRUE = ("1", "true", "on", "yes")


@dataclass(frozen=True)
class Facts:
    """What a rule may look at beyond method and path: a submitted field (form or JSON), a dashboard setting."""

    fields: Callable[[str], object] = lambda name: None
    settings: Callable[[str], object] = lambda name: None

    def flag(self, name: str) -> bool:
        value = self.fields(name)
        return value is True or (isinstance(value, str) and value.strip().lower() in _TRUE)


RoleSpec = str | Callable[[Facts], str]


@dataclass(frozen=True)
class Rule:
    methods: frozenset
    pattern: re.Pattern
    role: RoleSpec
    step_up: bool | Callable[[Facts], bool] = False
    enrolling: bool = False


def rule(methods: str, path: str, role: RoleSpec, *, step_up=False, enrolling=False) -> Rule:
    """``path`` is a regex of the whole path; ``{x}`` stands for one path segment."""
    regex = re.compile(path.replace("{x}", _SEGMENT))
    wanted = frozenset(methods.split())
    if "GET" in wanted:
        wanted |= {"HEAD"}
    return Rule(wanted, regex, role, step_up, enrolling)


def _restore_role(facts: Facts) -> str:
    # Operators may restore onto a new site only; over an existing site needs an admin.
    return OPERATOR if facts.flag("create_site") else ADMIN


def _restore_step_up(facts: Facts) -> bool:
    return not facts.flag("create_site")


def _logs_role(facts: Facts) -> str:
    # A frontend's log shows what downloads hide from viewers (reset links, session ids), redaction
    # or not: live logs are an operator's unless the admin lets viewers read them (issue 21.9).
    return VIEWER if facts.settings("viewer_logs") is True else OPERATOR


def _button_rules() -> tuple[Rule, ...]:
    """POST /stack/<stack>/<verb> and /site/<stack>/<site>/<verb>: one rule per action button."""
    found = []
    for spec in ACTION_SPECS:
        if spec.verb is not None:
            base = r"/stack/{x}/" if spec.scope == STACK else r"/site/{x}/{x}/"
            verb = re.escape(spec.verb).replace(r"\-", "[-_]")  # test-restore, also spelt test_restore
            found.append(rule("POST", base + verb, spec.role, step_up=spec.step_up))
    return tuple(found)


RULES: tuple[Rule, ...] = (
    # Without a session.
    rule("GET", r"/", PUBLIC),
    rule("GET", r"/healthz", PUBLIC),
    rule("GET", r"/static/{x}", PUBLIC),
    rule("GET POST", r"/login", PUBLIC),
    rule("GET POST", r"/login/code", PUBLIC),
    rule("GET", r"/metrics", PUBLIC),  # protected by its own scrape token, never by a session
    rule("GET", r"/metrics/server/{x}", PUBLIC),  # the same scrape token (pages_fleet.py)
    rule("GET", r"/fleet/prometheus-sd", PUBLIC),  # the same scrape token (pages_fleet.py)
    # Every signed-in user, also while setting up a second factor.
    rule("GET POST", r"/logout", VIEWER, enrolling=True),
    rule("GET POST", r"/account/2fa", VIEWER, enrolling=True),
    rule("GET POST", r"/account/verify", VIEWER),
    rule("GET", r"/account", VIEWER),
    # Pages every role reads.
    rule("GET", r"/dashboard", VIEWER),
    rule("GET", r"/fleet", VIEWER),  # only with fleet.listen (pages_fleet.py)
    rule("GET", r"/dashboard/host", VIEWER),
    rule("GET", r"/stack/{x}", VIEWER),
    rule("GET", r"/stack/{x}/logs", _logs_role),
    rule("GET", r"/stack/{x}/logs/stream", _logs_role),
    rule("GET", r"/backups/{x}/{x}", VIEWER),
    rule("GET", r"/jobs/{x}", VIEWER),
    rule("GET", r"/audit", VIEWER),
    rule("GET", r"/scheduler", VIEWER),
    # Operators: everyday actions and downloads (a dump holds every password hash of the site).
    rule("GET", r"/download/{x}/{x}/{x}", OPERATOR),
    # The stack and site buttons, each with its action's role and step-up (fmappliance/actions_table.py).
    *_button_rules(),
    # A restore from an offsite copy is the same route with ?source=offsite (rules see the path only), so it
    # follows exactly the rules of a local restore.
    rule("GET", r"/restore/{x}/{x}/{x}", OPERATOR),
    rule("POST", r"/restore/{x}/{x}/{x}", _restore_role, step_up=_restore_step_up),
    # Admins.
    rule("GET POST", r"/imports(/.*)?", ADMIN),
    rule("GET POST", r"/import(/.*)?", ADMIN),
    rule("POST", r"/scheduler/.+", ADMIN),
    # offsite_copy and offsite_check run from the agent's own timer; any page that starts them is an admin's.
    rule("GET POST", r"/offsite(/.*)?", ADMIN),
    rule("GET POST", r"/settings(/.*)?", ADMIN),
    # Fleet management: admin here, and the page checks admin on every server of the fleet (issue 24).
    rule("POST", r"/fleet/tokens", ADMIN, step_up=True),
    rule("POST", r"/fleet/servers/{x}/remove", ADMIN, step_up=True),
    rule("GET", r"/account/users", ADMIN),
    rule("POST", r"/account/users/{x}/reset-2fa", ADMIN, step_up=True),
)

DEFAULT_GET = Rule(frozenset({"GET", "HEAD"}), re.compile(".*"), VIEWER)


@dataclass(frozen=True)
class Decision:
    public: bool = False
    allowed: bool = True
    step_up: bool = False
    reason: str = ""


def find_rule(method: str, path: str) -> Rule | None:
    for candidate in RULES:
        if method in candidate.methods and candidate.pattern.fullmatch(path):
            return candidate
    if method in DEFAULT_GET.methods:
        return DEFAULT_GET
    return None


def decide(method: str, path: str, role: str, *, enrolling: bool = False, facts: Facts = Facts()) -> Decision:
    """May a session with ``role`` make this request?  (``role`` is ignored for public routes.)"""
    found = find_rule(method, path)
    if found is None:
        return Decision(allowed=False, reason="This action is not allowed for anyone.")
    if found.role == PUBLIC:
        return Decision(public=True)
    if enrolling and not found.enrolling:
        return Decision(allowed=False, reason="Set up your second sign-in factor first.")
    needed = found.role(facts) if callable(found.role) else found.role
    if RANK.get(role, -1) < RANK[needed]:
        return Decision(allowed=False, reason=f"Your role ({role or 'none'}) may not do this; it needs {needed}.")
    step_up = found.step_up(facts) if callable(found.step_up) else found.step_up
    return Decision(step_up=bool(step_up))


def allows(role: str, method: str, path: str, *, settings: Callable[[str], object] | None = None, **fields) -> bool:
    """For templates: would this request be allowed (step-up aside)?  ``settings``: dashboard config lookups."""
    facts = Facts(fields=lambda name: fields.get(name), settings=settings or (lambda name: None))
    return decide(method, path, role, facts=facts).allowed
