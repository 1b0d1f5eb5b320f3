"""Security headers on every response, errors and downloads included.

A WSGI middleware rather than bottle hooks: hooks do not run for every error path
(router 404/405, exceptions in other middleware), the middleware sees every
``start_response``.  It also catches anything that escaped the app and answers a
minimal, logged 500 instead of a traceback.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

# The dashboard needs no powerful browser feature: deny them all to this origin and to
# anything it could embed.
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), midi=(), payment=(), usb=()"
)

SECURITY_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
    ("Permissions-Policy", PERMISSIONS_POLICY),
    # A window opened from another site gets no handle on ours (and vice versa) ...
    ("Cross-Origin-Opener-Policy", "same-origin"),
    # ... and no other site may embed our responses (pages, scripts, backups) as resources.
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
_NAMES = {name.lower() for name, _ in SECURITY_HEADERS}

_LAST_RESORT_BODY = (
    b"<!doctype html><meta charset=utf-8><title>Error</title>"
    b"<h1>Internal error</h1><p>The dashboard hit an unexpected problem; it has been logged.</p>"
)


class SecurityHeadersMiddleware:
    """Wrap a WSGI app: add the security headers, turn escaped exceptions into a 500."""

    def __init__(self, app, error_page=None):
        self.app = app
        #: ``error_page(environ) -> (content type, body bytes)``: the dashboard's own 500 page
        #: (its layout, a way back); the minimal body stays for when that fails too.
        self.error_page = error_page

    def __call__(self, environ, start_response):
        def start_with_headers(status, headers, exc_info=None):
            headers = [(k, v) for k, v in headers if k.lower() not in _NAMES]
            headers.extend(SECURITY_HEADERS)
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"))
            import sys

            exc_info = sys.exc_info()
            content_type, body = self._error_body(environ)
            start_with_headers(
                "500 Internal Server Error",
                [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
                exc_info,
            )
            return [body]

    def _error_body(self, environ) -> tuple[str, bytes]:
        if self.error_page is not None:
            try:
                return self.error_page(environ)
            except Exception:
                log.exception("the error page itself failed; answering the minimal one")
        return "text/html; charset=utf-8", _LAST_RESORT_BODY
