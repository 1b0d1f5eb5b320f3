"""Cross-site request forgery defences for every POST.

Two independent checks, both must pass:
1. Synchronizer token: the session's token (or, on the login form, a token bound to a
   pre-session cookie) sent as ``X-CSRF-Token`` or the ``csrf_token`` form field,
   compared in constant time.
2. Origin: a POST whose ``Origin`` is not this very site (scheme + host), or, when the
   browser sent no Origin, whose ``Sec-Fetch-Site`` says cross-site/same-site, is refused
   even with a valid token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

LOGIN_COOKIE = "fmlogin"
HEADER = "X-CSRF-Token"
FIELD = "csrf_token"

_DEFAULT_PORTS = {"http": "80", "https": "443"}


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8", "surrogateescape"), given.encode("utf-8", "surrogateescape"))


def submitted_token(request) -> str | None:
    """The token a POST carries: header first, then the form field (never the JSON body)."""
    token = request.get_header(HEADER)
    if token:
        return token
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return request.forms.get(FIELD)
    return None


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_token(secret_key: str, nonce: str) -> str:
    """The login form's token: bound to the pre-session cookie by an HMAC (double submit)."""
    return hmac.new(
        secret_key.encode(), b"login-csrf:" + nonce.encode("utf-8", "surrogateescape"), hashlib.sha256
    ).hexdigest()


def _normalise(scheme: str, host: str) -> str:
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(":" + default):
        host = host[: -len(default) - 1]
    return f"{scheme}://{host}"


def origin_problem(environ: dict) -> str | None:
    """Why this POST looks cross-site, or None when it comes from our own pages."""
    origin = environ.get("HTTP_ORIGIN")
    if origin is not None:
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if "://" not in origin:
            return "the request came from an unknown origin"
        o_scheme, _, o_host = origin.partition("://")
        if _normalise(o_scheme.lower(), o_host) != _normalise(scheme, host):
            return "the request came from another site"
        return None
    fetch_site = (environ.get("HTTP_SEC_FETCH_SITE") or "").lower()
    if fetch_site in ("cross-site", "same-site"):
        return "the request came from another site"
    return None
