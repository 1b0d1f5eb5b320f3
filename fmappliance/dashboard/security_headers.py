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

    def __init__(self, app):
        self.app = app

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

            start_with_headers(
                "500 Internal Server Error",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(_LAST_RESORT_BODY)))],
                sys.exc_info(),
            )
            return [_LAST_RESORT_BODY]
