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

The services (services.py, built once by ``build_services``) are on ``ctx`` too:
``ctx.agent`` (AgentClient), ``ctx.scheduler`` (the BackupScheduler; only the serving
process starts it), ``ctx.backup_age`` (backup-age rules), ``ctx.audit``, ``ctx.config``,
``ctx.now()`` (aware UTC datetime from the injected clock), ``ctx.render(template, **values)``
for HTMX fragments, ``ctx.sessions.add_flash(ctx.session(), "ok"|"error", text)``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import urllib.parse

import bottle

from fmappliance.dashboard import csrf, negotiation
from fmappliance.dashboard.security_headers import SecurityHeadersMiddleware
from fmappliance.dashboard.services import DashboardServices, build_services
from fmappliance.dashboard.sessions import COOKIE_NAME, cookie_is_secure, cookie_value

log = logging.getLogger(__name__)

SESSION_KEY = "fmappliance.session"


class DashboardContext:
    """What the page modules share: the services plus request helpers.  One per app; no global state."""

    def __init__(self, services: DashboardServices):
        self.services = services
        self.config = services.config
        self.clock = services.clock
        self.secret_key = services.config["dashboard"]["secret_key"]
        self.agent = services.agent
        self.db = services.db
        self.sessions = services.sessions
        self.throttle = services.throttle
        self.passwords = services.passwords
        self.audit = services.audit
        self.templates = services.templates
        self.static_files = services.static_files
        self.static_urls = {name: f"/static/{name}?v={digest}" for name, (_, _, digest) in self.static_files.items()}
        #: The BackupScheduler; only the serving process starts it.
        self.scheduler = services.scheduler
        #: How old a site's last backup may be (per schedule; 48 h without one), overdue alerts.
        self.backup_age = services.backup_age

    # -- request facts ------------------------------------------------------------------

    def now(self) -> dt.datetime:
        return self.services.now()

    @staticmethod
    def client_address() -> str:
        # waitress puts the real client here when the request came through trusted_proxy;
        # bottle's request.remote_addr would trust a client-set X-Forwarded-For (docs/pitfalls.md).
        return bottle.request.environ.get("REMOTE_ADDR", "")

    def secure_cookies(self) -> bool:
        return cookie_is_secure(self.config["dashboard"]["secure_cookies"], bottle.request.environ)

    def session(self):
        """The signed-in session of this request, or None (looked up once per request)."""
        environ = bottle.request.environ
        if SESSION_KEY not in environ:
            environ[SESSION_KEY] = self.sessions.load(cookie_value(environ, COOKIE_NAME))
        return environ[SESSION_KEY]

    def user(self) -> str:
        session = self.session()
        return session.user if session else ""

    # -- answers ------------------------------------------------------------------------

    def render(self, template: str, **values) -> str:
        values.setdefault("static_urls", self.static_urls)
        return self.templates.render(template, **values)

    def page(self, template: str, title: str, *, banner: str = "", notices=(), **values) -> str:
        """A full page: the named body template inside the layout."""
        session = self.session()
        body = self.render(template, csrf_token=session.csrf_token if session else "", **values)
        flashed = self.sessions.pop_flash(session) if session else []
        return self.render(
            "layout",
            title=title,
            body=body,
            user=session.user if session else "",
            csrf_token=session.csrf_token if session else "",
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
            body = self.render("error", status=status, message=message)
        return bottle.HTTPResponse(body, status=status, headers={"Content-Type": "text/html; charset=utf-8"})

    # -- guards -------------------------------------------------------------------------

    def login_required(self, handler):
        """Route decorator: no session → 303 to the login page (pages) or 401 (JSON/HTMX)."""

        @functools.wraps(handler)
        def guarded(*args, **kwargs):
            if self.session() is None:
                request = bottle.request
                if negotiation.wants_json(request) or negotiation.is_htmx(request):
                    return self.fail(401, "Your session has ended; sign in again.")
                target = request.fullpath + (("?" + request.query_string) if request.query_string else "")
                next_path = negotiation.safe_local_path(target if request.method == "GET" else "/dashboard")
                return bottle.HTTPResponse(
                    status=303, headers={"Location": "/login?" + urllib.parse.urlencode({"next": next_path})}
                )
            return handler(*args, **kwargs)

        return guarded

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


class DashboardBottle(bottle.Bottle):
    """A Bottle whose every answer passes the security-headers middleware (errors included)."""

    def __init__(self, ctx: DashboardContext):
        # catchall off: an exception leaves bottle and the middleware logs it and answers
        # a minimal 500, so no traceback can reach a browser.
        super().__init__()
        self.config["catchall"] = False
        self.ctx = ctx
        self._secured = SecurityHeadersMiddleware(functools.partial(bottle.Bottle.wsgi, self))

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
        pages_audit,
        pages_auth,
        pages_backups,
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

    pages_public.register(app, ctx)
    pages_auth.register(app, ctx)
    pages_stacks.register(app, ctx)
    pages_logs.register(app, ctx)
    pages_backups.register(app, ctx)
    pages_restore.register(app, ctx)
    pages_jobs.register(app, ctx)
    pages_audit.register(app, ctx)
    pages_scheduler.register(app, ctx)
    pages_host.register(app, ctx)
    pages_metrics.register(app, ctx)
    return app
