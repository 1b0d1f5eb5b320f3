"""What kind of answer a request wants, and which redirect targets are safe."""

from __future__ import annotations

import re

DEFAULT_LANDING = "/dashboard"
# A local absolute path: one leading slash, no backslash, no control characters, no scheme.
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\x00-\x1f\x7f]*")


def wants_json(request) -> bool:
    return "application/json" in (request.get_header("Accept") or "")


def is_htmx(request) -> bool:
    return request.get_header("HX-Request") == "true"


def safe_local_path(value, default: str = DEFAULT_LANDING) -> str:
    """``value`` when it is a path on this site ("/stack/prod"), else ``default``.

    Refuses "//evil", "/\\evil", "https://evil", "javascript:..." and the like: an open
    redirect after login would hand the session to a phishing page.
    """
    if not isinstance(value, str) or len(value) > 2000 or not _LOCAL_PATH.fullmatch(value):
        return default
    if value.startswith("/login") or value.startswith("/logout"):
        return default
    return value
