"""``make_app(config)``: the dashboard's WSGI app, wrapped in the security-headers middleware.

Routes live in ``pages_*.py`` modules, each with ``register(app, ctx)``; ``ctx``
(a :class:`DashboardContext`) carries everything they share.  A page module typically::

    @app.get("/thing")
    @ctx.login_required                 # 303 to /login (pages) or 401 (JSON/HTMX)
    def thing():
        if negotiation.wants_json(bottle.request): return ctx.json_response({...})
        return ctx.page("thing", "Title", active="thing", rows=...)   # assets/templates/thing.tpl

    @app.post("/thing/add")
    @ctx.protected_post                 # session + CSRF token + same-origin, else 401/403
    def add():
        ctx.audit.record(user=ctx.user(), address=ctx.client_address(), action="thing_add", target=..., result="ok")
        return ctx.fail(400, "...")     # error in the shape the request wants

Who may reach a route is decided before it runs, by the one table in authorize.py (add a
line there with every new route); pages show a button only when ``can("POST", url)``.

The services (services.py, built once by ``build_services``) are on ``ctx`` too:
``ctx.agent`` (AgentClient), ``ctx.scheduler`` (the ScheduleService; only the serving
process starts it), ``ctx.backup_age`` (backup-age rules), ``ctx.audit``, ``ctx.config``,
``ctx.now()`` (aware UTC datetime from the injected clock), ``ctx.render(template, **values)``
for HTMX fragments, ``ctx.sessions.add_flash(ctx.session(), "ok"|"error", text)``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import urllib.parse

import bottle

from fmappliance.config import dashboard_server_roles
from fmappliance.dashboard import authorize, csrf, negotiation, request_ids, server_scope
from fmappliance.dashboard.security_headers import SecurityHeadersMiddleware
from fmappliance.dashboard.services import DashboardServices, build_services
from fmappliance.dashboard.sessions import STAGE_ENROLL, cookie_is_secure, cookie_value, session_cookie_name

log = logging.getLogger(__name__)

SESSION_KEY = "fmappliance.session"
ERROR_HEADINGS = {
    400: "That request cannot be answered",
    401: "Sign in first",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Not now",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    502: "The agent did not answer",
}


class DashboardContext:
    """What the page modules share: the services plus request helpers.  One per app; no global state."""

    def __init__(self, services: DashboardServices):
        self.services = services
        self.config = services.config
        self.clock = services.clock
        self.secret_key = services.config["dashboard"]["secret_key"]
        self.db = services.db
        self.sessions = services.sessions
        self.throttle = services.throttle
        self.passwords = services.passwords
        #: user -> (bcrypt hash, role)
        self.users = services.users
        #: user -> {server or "*": role} (issue 24: roles per server)
        self.server_roles = dashboard_server_roles(services.config)
        self.totp_mode = services.config["dashboard"]["totp"]
        self.second_factors = services.second_factors
        self.audit = services.audit
        self.templates = services.templates
        self.static_files = services.static_files
        self.static_urls = {name: f"/static/{name}?v={digest}" for name, (_, _, digest) in self.static_files.items()}
        #: The ScheduleService; only the serving process starts it.
        self.scheduler = services.scheduler
        self._age_rules: dict = {}

    # -- request facts ------------------------------------------------------------------

    @property
    def agent(self):
        """The agent client of the server this request is about: the local agent, or the server
        named by ``/s/<server>/`` (server_scope.py picks it before the route runs)."""
        try:
            selected = bottle.request.environ.get(server_scope.CLIENT_KEY)
        except (RuntimeError, AttributeError):  # outside a request (a background thread)
            selected = None
        return selected or self.services.agent

    @property
    def backup_age(self):
        """How old a site's last backup may be (per schedule; 48 h without one), overdue alerts:
        from the schedules of the server this request is about."""
        try:
            local = self.is_local_request()
        except (RuntimeError, AttributeError):  # outside a request
            local = True
        if local:
            return self.services.backup_age
        name = self.server()
        rules = self._age_rules.get(name)
        if rules is None:
            from fmappliance.dashboard.backup_age import BackupAgeRules

            rules = self._age_rules[name] = BackupAgeRules(
                self.services.backup_age.store, server=name, local_name=self.config["fleet"]["local_name"]
            )
        return rules

    @staticmethod
    def server() -> str | None:
        """The server named in this request's URL (``/s/<server>/…``), None for the local one."""
        return bottle.request.environ.get(server_scope.SERVER_KEY)

    def audit_context(self) -> dict:
        """What an audit row of this request gains in a fleet: its server and request id."""
        try:
            environ = bottle.request.environ
            path = bottle.request.path
        except (RuntimeError, AttributeError):  # a background thread's row
            return {}
        server = environ.get(server_scope.SERVER_KEY)
        if server is None and server_scope.is_scoped(path):
            server = self.config["fleet"]["local_name"]
        return {"server": server or "", "request_id": request_ids.current()}

    def is_local_request(self) -> bool:
        """Does this request talk to the dashboard's own server (no prefix, or the local name)?"""
        name = self.server()
        view = server_scope.fleet_view(self)
        return name is None or (view is not None and name == view.local_name)

    def server_facts(self) -> dict:
        """For the layout: the server switcher, and the banner and button reason of a server not online."""
        view = server_scope.fleet_view(self)
        if view is None or self.session() is None:
            return {"servers": [], "server": "", "server_banner": "", "server_blocked": ""}
        current = self.server() or view.local_name
        user = self.session().user
        names = [view.local_name] + [row["name"] for row in view.registry.servers()]
        names = [name for name in names if self.role_on(user, name)]
        problem = None if self.is_local_request() else server_scope.server_problem(self, current)
        return {
            "servers": names if len(names) > 1 else [],
            "server": current,
            "server_banner": problem[1] if problem else "",
            "server_blocked": problem[1] if problem else "",
        }

    def now(self) -> dt.datetime:
        return self.services.now()

    @staticmethod
    def client_address() -> str:
        # waitress puts the real client here when the request came through trusted_proxy;
        # bottle's request.remote_addr would trust a client-set X-Forwarded-For (docs/pitfalls.md).
        return bottle.request.environ.get("REMOTE_ADDR", "")

    def secure_cookies(self) -> bool:
        return cookie_is_secure(self.config["dashboard"]["secure_cookies"], bottle.request.environ)

    def session_cookie_name(self) -> str:
        return session_cookie_name(self.secure_cookies())

    def fingerprint(self, user: str) -> str | None:
        """A keyed digest of the user's current password hash (None: no such user).

        A session stores it at sign-in; a changed hash or a removed user no longer
        matches, and the session ends.
        """
        entry = self.users.get(user)
        if entry is None:
            return None
        return hmac.new(
            self.secret_key.encode(), b"session-fingerprint:" + entry[0].encode(), hashlib.sha256
        ).hexdigest()[:32]

    def session(self):
        """The signed-in session of this request, or None (looked up once per request)."""
        environ = bottle.request.environ
        if SESSION_KEY not in environ:
            session = self.sessions.load(cookie_value(environ, self.session_cookie_name()))
            if session is not None:
                current = self.fingerprint(session.user)
                if current is None or not hmac.compare_digest(current, session.fingerprint):
                    log.info("ended a session of %r: the user's credentials changed or were removed", session.user)
                    self.sessions.destroy(session)
                    session = None
            environ[SESSION_KEY] = session
        return environ[SESSION_KEY]

    def user(self) -> str:
        session = self.session()
        return session.user if session else ""

    def role(self) -> str:
        """The session's role for this request: on the server in the URL (``/s/<server>/``, or the
        local server for its unprefixed pages); on the pages every server shares, the role on the
        dashboard's own server (a viewer's for users with roles elsewhere only)."""
        session = self.session()
        if session is None or session.user not in self.users:
            return ""
        return self.role_for(session.user, bottle.request.environ, bottle.request.path)

    def role_for(self, user: str, environ: dict, path: str) -> str:
        name = environ.get(server_scope.SERVER_KEY)
        if name is None and not server_scope.is_scoped(path):
            return self.users[user][1]
        return self.role_on(user, name or self.config["fleet"]["local_name"])

    def role_on(self, user: str, server: str) -> str:
        """``user``'s role on ``server`` ("" for none): dashboard.credentials.<user>.servers or .roles."""
        entry = self.users.get(user)
        if entry is None:
            return ""
        roles = self.server_roles.get(user) or {}
        if set(roles) == {"*"}:  # one role everywhere: the users table's (what a demotion changes)
            return entry[1]
        return roles.get(server) or roles.get("*") or ""

    def admin_everywhere(self, user: str) -> bool:
        """Fleet management (tokens, remove, rotate) needs admin on every server of the fleet."""
        view = server_scope.fleet_view(self)
        names = [self.config["fleet"]["local_name"]]
        if view is not None:
            names += [row["name"] for row in view.registry.servers()]
        return all(self.role_on(user, name) == authorize.ADMIN for name in names)

    def can(self, method: str, path: str, **fields) -> bool:
        """Would the table let this session make that request?  (Templates show buttons by it.)"""
        session = self.session()
        if session is None or self.enrolling(session):
            return False
        return authorize.allows(self.role(), method, path, settings=self.config["dashboard"].get, **fields)

    def still_allowed(self, id_hash: str, method: str, path: str) -> bool:
        """Does the session with this hash still exist, still belong to a user with the same
        credentials, and may that user's role still make this request?  For a long request
        (a followed log), re-checked while it runs: logout, expiry, removal or demotion end it."""
        session = self.sessions.peek(id_hash)
        if session is None or self.enrolling(session):
            return False
        current = self.fingerprint(session.user)
        if current is None or not hmac.compare_digest(current, session.fingerprint):
            return False
        try:  # a followed log re-checks from its own request: the role on that request's server
            role = self.role_for(session.user, bottle.request.environ, path)
        except (RuntimeError, AttributeError):
            role = self.users[session.user][1]
        facts = authorize.Facts(settings=self.config["dashboard"].get)
        return authorize.decide(method, path, role, facts=facts).allowed

    def enrolling(self, session) -> bool:
        """This session may only set up its second factor (``totp: required`` and none yet)."""
        # A session started before ``totp`` was switched away from required is not held back.
        return session.stage == STAGE_ENROLL and self.totp_mode == "required"

    def needs_second_factor(self, user: str) -> bool:
        return self.totp_mode != "off" and self.second_factors.enrollment(user) is not None

    # -- answers ------------------------------------------------------------------------

    def render(self, template: str, **values) -> str:
        values.setdefault("static_urls", self.static_urls)
        values.setdefault("can", self.can)
        # Included templates get the same helpers.
        values.setdefault("partial", self.render)
        # Buttons of a server that cannot act now are shown disabled, with the reason.
        if "server_blocked" not in values:
            try:
                values["server_blocked"] = self._server_blocked()
            except (RuntimeError, AttributeError):  # rendered outside a request
                values["server_blocked"] = ""
        return self.templates.render(template, **values)

    def _server_blocked(self) -> str:
        environ = bottle.request.environ
        name = environ.get(server_scope.SERVER_KEY)
        if name is None or self.is_local_request():
            return ""
        if "fmappliance.server_blocked" not in environ:
            problem = server_scope.server_problem(self, name)
            environ["fmappliance.server_blocked"] = problem[1] if problem else ""
        return environ["fmappliance.server_blocked"]

    def page(self, template: str, title: str, *, banner: str = "", notices=(), page_token: str = "", **values) -> str:
        """A full page: the named body template inside the layout.

        ``page_token``: the CSRF token for the csrf-token meta of a page without a session (sign-in).
        """
        session = self.session()
        # The body sees the banner too (a page may say less when the banner already says why).
        body = self.render(template, csrf_token=session.csrf_token if session else "", banner=banner, **values)
        flashed = self.sessions.pop_flash(session) if session else []
        facts = self.server_facts()
        return self.render(
            "layout",
            title=title,
            body=body,
            servers=facts["servers"],
            server=facts["server"],
            server_banner=facts["server_banner"] if facts["server_banner"] != banner else "",
            user=session.user if session else "",
            enrolling=bool(session and self.enrolling(session)),
            csrf_token=session.csrf_token if session else page_token,
            banner=banner,
            notices=list(notices) + [tuple(n) for n in flashed],
            active=values.get("active", ""),
        )

    @staticmethod
    def json_response(payload: dict, status: int = 200) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(
            json.dumps(payload),
            status=status,
            headers={"Content-Type": "application/json", "Cache-Control": "no-store"},
        )

    def fail(self, status: int, message: str) -> bottle.HTTPResponse:
        """An error answer in the shape the request wants (JSON, HTMX fragment or page)."""
        request = bottle.request
        if negotiation.wants_json(request):
            return self.json_response({"success": False, "message": message}, status)
        if negotiation.is_htmx(request):
            # htmx swaps 2xx only; 4xx stays visible through app.js's error listener.
            body = self.render("notice", kind="error", text=message)
        else:
            body = self.error_page(status, message)
        return bottle.HTTPResponse(body, status=status, headers={"Content-Type": "text/html; charset=utf-8"})

    def error_page(self, status: int, message: str) -> str:
        """An error as a full page: the layout (navigation included), the sentence, ways back."""
        request = bottle.request
        retry = ""
        if request.method in ("GET", "HEAD") and status >= 500:
            retry = self.return_path()
        return self.page(
            "error",
            f"{status} {ERROR_HEADINGS.get(status, 'Error')}",
            heading=ERROR_HEADINGS.get(status, "Error"),
            message=message,
            retry=retry,
        )

    def crash_answer(self, environ) -> tuple[str, bytes]:
        """The 500 for an exception that escaped a route (SecurityHeadersMiddleware asks)."""
        bottle.request.bind(environ)
        message = "The dashboard hit an unexpected problem; it has been logged."
        if negotiation.is_htmx(bottle.request) or negotiation.wants_json(bottle.request):
            response = self.fail(500, message)
            return response.headers["Content-Type"], response.body.encode()
        return "text/html; charset=utf-8", self.error_page(500, message).encode()

    # -- guards -------------------------------------------------------------------------

    def sign_in_answer(self) -> bottle.HTTPResponse:
        """No session: 303 to the login page (pages) or 401 (JSON/HTMX)."""
        request = bottle.request
        if negotiation.wants_json(request) or negotiation.is_htmx(request):
            return self.fail(401, "Your session has ended; sign in again.")
        next_path = self.return_path() if request.method in ("GET", "HEAD") else "/dashboard"
        return bottle.HTTPResponse(
            status=303, headers={"Location": "/login?" + urllib.parse.urlencode({"next": next_path})}
        )

    def login_required(self, handler):
        """Route decorator: no session → :meth:`sign_in_answer`."""

        @functools.wraps(handler)
        def guarded(*args, **kwargs):
            if self.session() is None:
                return self.sign_in_answer()
            return handler(*args, **kwargs)

        return guarded

    def return_path(self) -> str:
        """Where to come back to after an interruption (sign-in, step-up): this page for a
        GET; for a POST its form's ``return_to``, else the page it was sent from."""
        request = bottle.request
        if request.method in ("GET", "HEAD"):
            target = request.fullpath + (("?" + request.query_string) if request.query_string else "")
            return negotiation.safe_local_path(target)
        if self._is_form():
            back = negotiation.safe_local_path(request.forms.getunicode("return_to", default="") or "", default="")
            if back:
                return back
        referer = urllib.parse.urlsplit(request.get_header("Referer") or "")
        if referer.netloc and referer.netloc == request.get_header("Host"):
            return negotiation.safe_local_path(referer.path + (("?" + referer.query) if referer.query else ""))
        return negotiation.DEFAULT_LANDING

    @staticmethod
    def _is_form() -> bool:
        content_type = (bottle.request.content_type or "").split(";")[0].strip().lower()
        return content_type in ("application/x-www-form-urlencoded", "multipart/form-data")

    def _field(self, name: str):
        """A submitted field, from a form or a JSON object body (None when absent or unreadable)."""
        request = bottle.request
        try:
            if self._is_form():
                return request.forms.getunicode(name)
            body = request.json
            return body.get(name) if isinstance(body, dict) else None
        except Exception:
            return None

    def authorize_request(self) -> bottle.HTTPResponse | None:
        """Apply the table of authorize.py to this request: None to go on, else the refusal."""
        request = bottle.request
        session = self.session()
        enrolling = bool(session and self.enrolling(session))
        decision = authorize.decide(
            request.method,
            request.path,
            self.role(),
            enrolling=enrolling,
            facts=authorize.Facts(fields=self._field, settings=self.config["dashboard"].get),
        )
        if decision.public:
            return None
        if session is None:
            return self.sign_in_answer()
        if not decision.allowed and not enrolling and not self.role():
            server = self.server() or self.config["fleet"]["local_name"]
            decision = authorize.Decision(
                allowed=False,
                reason=f"You have no role on server {server} (dashboard.credentials.{session.user}: servers or roles).",
            )
        if not decision.allowed:
            if enrolling and request.method in ("GET", "HEAD") and not negotiation.wants_json(request):
                next_path = urllib.parse.urlencode({"next": self.return_path()})
                return bottle.HTTPResponse(status=303, headers={"Location": "/account/2fa?" + next_path})
            log.warning(
                "refused %s %s for %s (%s): %s",
                request.method,
                request.path,
                session.user,
                self.role(),
                decision.reason,
            )
            self.audit.record_repeat(
                user=session.user,
                address=self.client_address(),
                action="refused",
                target=f"{request.method} {request.path}",
                result=decision.reason,
            )
            return self.fail(403, decision.reason)
        if decision.step_up and self.clock() - session.verified_at > authorize.STEP_UP_SECONDS:
            return self.step_up_answer()
        return None

    def step_up_answer(self) -> bottle.HTTPResponse:
        """Ask for a fresh code (or the password, without a second factor) before going on."""
        request = bottle.request
        message = (
            "This action needs a fresh confirmation: enter a current code from your authenticator app, then repeat it."
        )
        if negotiation.wants_json(request):
            return self.json_response({"success": False, "step_up": True, "message": message}, 401)
        location = "/account/verify?" + urllib.parse.urlencode({"next": self.return_path()})
        if negotiation.is_htmx(request):
            # htmx follows HX-Redirect with a full page load; a 3xx would be followed by the XHR itself.
            return bottle.HTTPResponse(status=200, headers={"HX-Redirect": location})
        return bottle.HTTPResponse(status=303, headers={"Location": location})

    def csrf_problem(self) -> str | None:
        """Why this POST must be refused (bad origin, missing/wrong token), or None."""
        problem = csrf.origin_problem(bottle.request.environ)
        if problem:
            return f"Refused: {problem}."
        session = self.session()
        if session is None or not csrf.tokens_match(session.csrf_token, csrf.submitted_token(bottle.request)):
            return "Refused: the form's security token is missing or out of date; reload the page and try again."
        return None

    def protected_post(self, handler):
        """Route decorator for state-changing POSTs: a session and a valid CSRF token."""

        @functools.wraps(handler)
        def checked(*args, **kwargs):
            problem = self.csrf_problem()
            if problem:
                log.warning("refused POST %s from %s: %s", bottle.request.path, self.client_address(), problem)
                return self.fail(403, problem)
            return handler(*args, **kwargs)

        return self.login_required(checked)


def _error_page(ctx: DashboardContext):
    def handler(error: bottle.HTTPError):
        status = error.status_code
        if status >= 500 and error.exception is not None:
            log.error(
                "error on %s %s: %s", bottle.request.method, bottle.request.path, error.traceback or error.exception
            )
        messages = {
            404: "There is no such page.",
            405: "This address does not accept that kind of request.",
            413: "The request is too large.",
        }
        message = messages.get(status) or (
            error.body
            if isinstance(error.body, str) and status < 500
            else "The dashboard hit an unexpected problem; it has been logged."
        )
        return ctx.fail(status, message)

    return handler


def _authorize_hook(ctx: DashboardContext, app: bottle.Bottle):
    """Runs before every matched route, whoever registered it and however: a route is covered
    by the table from the moment it exists.  Paths no route serves keep their 404/405."""

    def before_request():
        try:
            app.router.match(bottle.request.environ)
        except bottle.HTTPError:
            return
        refusal = ctx.authorize_request()
        if refusal is not None:
            raise refusal

    return before_request


class DashboardBottle(bottle.Bottle):
    """A Bottle whose every answer passes the security-headers middleware (errors included)."""

    def __init__(self, ctx: DashboardContext):
        # catchall off: an exception leaves bottle and the middleware logs it and answers
        # a minimal 500, so no traceback can reach a browser.
        super().__init__()
        self.config["catchall"] = False
        self.ctx = ctx
        # /s/<server>/… is taken off before routing (server_scope.py), inside the headers.
        scoped = server_scope.ServerScope(functools.partial(bottle.Bottle.wsgi, self))
        self._secured = SecurityHeadersMiddleware(scoped, ctx.crash_answer)

    def wsgi(self, environ, start_response):
        return self._secured(environ, start_response)


def make_app(
    config: dict, *, agent_client=None, clock=None, scheduler=None, services: DashboardServices | None = None
) -> bottle.Bottle:
    """Build the dashboard WSGI app over ``services`` (built from ``config`` when not given).

    ``app.ctx`` is its :class:`DashboardContext`.  The scheduler is not started here: only
    the serving process runs it (``__main__``); the pages still use its store.
    """
    from fmappliance.dashboard import (
        pages_account,
        pages_audit,
        pages_auth,
        pages_backups,
        pages_fleet,
        pages_host,
        pages_jobs,
        pages_logs,
        pages_metrics,
        pages_public,
        pages_restore,
        pages_scheduler,
        pages_stacks,
    )

    if services is None:
        services = build_services(config, agent_client=agent_client, clock=clock, scheduler=scheduler)
    ctx = DashboardContext(services)
    app = DashboardBottle(ctx)
    app.default_error_handler = _error_page(ctx)
    # First: this request's id (sent as X-FM-Request, stored with its audit rows).
    app.add_hook("before_request", request_ids.start)
    services.audit.context = ctx.audit_context
    app.add_hook("before_request", _authorize_hook(ctx, app))
    app.add_hook("before_request", server_scope.select_hook(ctx, app))

    # In this order: bottle tries dynamic routes in the order they were added.
    for pages in (
        pages_public,
        pages_auth,
        pages_account,
        pages_stacks,
        pages_logs,
        pages_backups,
        pages_restore,
        pages_jobs,
        pages_audit,
        pages_scheduler,
        pages_host,
        pages_metrics,
        pages_fleet,
    ):
        pages.register(app, ctx)
    return app
