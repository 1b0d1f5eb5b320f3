"""Routes that need no session: ``/`` (redirect), ``/healthz`` and ``/static/<file>``.

Static files come from the package with a fixed allow-list, are held in memory (a few
tens of KB) and are addressed with a content hash (``?v=``), so they can be cached long.
"""

from __future__ import annotations

import hashlib

import bottle

from fmappliance.dashboard.templates import asset_dir

STATIC_FILES = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "htmx.min.js": "text/javascript; charset=utf-8",
    "logs.js": "text/javascript; charset=utf-8",
}


def load_static() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, content type, short content hash)."""
    root = asset_dir("static")
    out = {}
    for name, content_type in STATIC_FILES.items():
        data = (root / name).read_bytes()
        out[name] = (data, content_type, hashlib.sha256(data).hexdigest()[:12])
    return out


def register(app: bottle.Bottle, ctx) -> None:
    files = ctx.static_files

    @app.get("/")
    def root():
        # With more than one server the fleet page is home; /s/<server>/ is that server's dashboard.
        view = getattr(ctx.services, "fleet_view", None)
        home = "/dashboard"
        if view is not None and not bottle.request.environ.get("fmappliance.server") and view.registry.servers():
            home = "/fleet"
        return bottle.HTTPResponse(status=303, headers={"Location": home})

    @app.get("/healthz")
    def healthz():
        # Says only that the process answers; no auth, no details.
        bottle.response.content_type = "text/plain; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-store")
        return "ok"

    @app.route("/static/<name>", method=["GET", "HEAD"])
    def static(name):
        entry = files.get(name)
        if entry is None:
            return ctx.fail(404, "There is no such file.")
        data, content_type, _ = entry
        return bottle.HTTPResponse(
            data,
            headers={
                "Content-Type": content_type,
                "Content-Length": str(len(data)),
                "Cache-Control": "public, max-age=31536000, immutable",
            },
        )
