"""Every server page also under ``/s/<server>/…``: one prefix, resolved before routing.

The unprefixed routes keep meaning the local server.  :class:`ServerScope` (WSGI, inside the
security headers) takes ``/s/<name>`` off the path, so the same routes serve every server, and
records the name in the environ; :func:`select_hook` (a bottle hook, after authorization) picks
that server's agent client — the local agent or a FleetClient through its link — and refuses at
once, never queued, what a server that is not online cannot do.  ``ctx.agent`` is the selected
client, so pages do not know which server they talk to.

On the way out, the prefix is put back on the links of the answer: server-scoped paths in HTML
attributes (``href``, ``action``, ``hx-post``, ``data-stream`` …), ``Location`` and
``HX-Redirect``.  Paths that are the same for every server (sign-in, account, audit, fleet,
metrics, static files) are left alone.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse

import bottle

from fmappliance.fleet.token import is_valid_server_name

log = logging.getLogger(__name__)

#: The environ keys: the server named in the URL, and its agent client (set by select_hook).
SERVER_KEY = "fmappliance.server"
CLIENT_KEY = "fmappliance.agent"
#: The prefix taken off, "/s/erp-b" (for the links of the answer).
PREFIX_KEY = "fmappliance.server_prefix"

# Only well-formed names are taken off (the name goes back into the answer's links unescaped: a
# quote or '<' must never get there); anything else stays on the path and meets the router's 404.
_PREFIXED = re.compile(r"^/s/([a-z][a-z0-9-]{0,31})(/.*)?$")
#: The first path segments whose pages and actions belong to one server.
SCOPED_ROOTS = ("dashboard", "stack", "site", "backups", "download", "restore", "jobs", "imports", "scheduler")
_SCOPED = "|".join(SCOPED_ROOTS)
_ATTRIBUTE = re.compile(
    r"""(\s(?:href|action|formaction|src|hx-get|hx-post|hx-put|hx-delete|hx-patch|data-[a-z0-9-]+)=")"""
    rf"""(/(?:{_SCOPED})(?=[/?#"]))"""
)
_PATH = re.compile(rf"^/(?:{_SCOPED})(?:[/?#]|$)")


def is_scoped(path: str) -> bool:
    """Does this path (of this dashboard) name a page or action of one server?"""
    return bool(_PATH.match(path))


def add_prefix(prefix: str, location: str) -> str:
    """``location`` with ``prefix`` when it is a server-scoped path of this dashboard."""
    parts = urllib.parse.urlsplit(location)
    if parts.scheme or parts.netloc:
        if not is_scoped(parts.path):
            return location
        return urllib.parse.urlunsplit(parts._replace(path=prefix + parts.path))
    return prefix + location if is_scoped(location) else location


class ServerScope:
    """WSGI: ``/s/<name>/rest`` → ``/rest`` with the name in the environ; links of the answer re-prefixed."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        match = _PREFIXED.match(path)
        if match is None:
            return self.app(environ, start_response)
        name = match.group(1)
        prefix = f"/s/{name}"
        environ[SERVER_KEY] = name
        environ[PREFIX_KEY] = prefix
        environ["PATH_INFO"] = match.group(2) or "/"
        # request.fullpath keeps the prefix: "come back here" links (sign-in, step-up) stay on the server.
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "").rstrip("/") + prefix
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"], captured["exc_info"] = status, headers, exc_info
            return lambda data: captured.setdefault("written", []).append(data)

        body = self.app(environ, capture)
        headers = [
            (k, add_prefix(prefix, v) if k.lower() in ("location", "hx-redirect") else v)
            for k, v in captured["headers"]
        ]
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if not content_type.startswith("text/html") or environ.get("REQUEST_METHOD") == "HEAD":
            # Streams (downloads, followed logs) pass through untouched, chunk by chunk.
            start_response(captured["status"], headers, captured["exc_info"])
            return body
        try:
            html = b"".join(captured.get("written", [])) + b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        html = _ATTRIBUTE.sub(lambda m: m.group(1) + prefix + m.group(2), html.decode("utf-8")).encode("utf-8")
        headers = [(k, str(len(html)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(captured["status"], headers, captured["exc_info"])
        return [html]


#: Seconds a server's FleetClient (and its short stacks cache) is reused.
CLIENT_SECONDS = 30.0


class ServerClients:
    """The agent client of each server named in URLs, reused for a moment (a rotated token is
    picked up within :data:`CLIENT_SECONDS`; the old one stays valid 5 minutes)."""

    def __init__(self, view, clock=time.monotonic):
        self.view = view
        self.clock = clock
        self._clients: dict[str, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def client(self, name: str):
        now = self.clock()
        with self._lock:
            made = self._clients.get(name)
            if made and now - made[0] < CLIENT_SECONDS:
                return made[1]
        client = self.view.client(name)
        with self._lock:
            self._clients[name] = (now, client)
        return client


def fleet_view(ctx):
    return getattr(ctx.services, "fleet_view", None)


def server_problem(ctx, name: str) -> tuple[int, str] | None:
    """Why ``name`` cannot take an action now (status, sentence), or None when it can."""
    view = fleet_view(ctx)
    if view is None or name == view.local_name:
        return None
    live = view.hub.state(name)
    state = live["state"]
    if state == "unreachable":
        return 503, view.hub._unreachable_sentence(name)
    if state == "agent_down":
        return 502, f"{name}'s uplink is connected but its agent does not answer."
    if state == "outdated":
        return 409, (
            f"server {name} runs agent {live['agent_version']}, older than this dashboard needs: "
            "it is read-only until its agent is upgraded."
        )
    return None


def select_hook(ctx, app: bottle.Bottle):
    """Before every matched route (after authorization): the agent client of the server in the URL."""

    def before_request():
        environ = bottle.request.environ
        name = environ.get(SERVER_KEY)
        if name is None:
            return
        try:
            app.router.match(environ)
        except bottle.HTTPError:
            return
        if not is_scoped(bottle.request.path) and bottle.request.path != "/":
            raise ctx.fail(404, "There is no such page.")
        view = fleet_view(ctx)
        if view is None:
            raise ctx.fail(404, "This dashboard runs no fleet hub (fleet.listen is not set).")
        if not is_valid_server_name(name) or (name != view.local_name and view.registry.api_token(name) is None):
            raise ctx.fail(404, f"There is no server {name} in the fleet.")
        if bottle.request.method not in ("GET", "HEAD"):
            problem = server_problem(ctx, name)
            if problem is not None:
                log.info(
                    "refused %s %s on %s at once: %s", bottle.request.method, bottle.request.path, name, problem[1]
                )
                raise ctx.fail(*problem)
        clients = getattr(ctx.services, "server_clients", None)
        if clients is None or clients.view is not view:
            clients = ctx.services.server_clients = ServerClients(view)
        environ[CLIENT_KEY] = clients.client(name)

    return before_request
