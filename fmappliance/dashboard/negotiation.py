"""What kind of answer a request wants, the fields it sends, and which redirect targets are safe."""

from __future__ import annotations

import json
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


def read_fields(request, fields: tuple[str, ...], *, max_bytes: int) -> tuple[dict | None, int | None, str | None]:
    """The submitted fields (a form, or a JSON object of at most ``max_bytes``), or (None, status, message).

    From a form every field is there as text ("" when not sent); from JSON the fields sent and not null,
    as sent (a number stays a number: the caller checks the values).
    """
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return {k: request.forms.getunicode(k, default="") or "" for k in fields}, None, None
    raw = request.body.read(max_bytes + 1)
    if len(raw) > max_bytes:
        return None, 413, "The request is too large."
    names = ", ".join(fields[:-1]) + " and " + fields[-1] if len(fields) > 1 else "".join(fields)
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        return None, 400, f"The body is not valid JSON; send an object with the fields {names}."
    if not isinstance(data, dict):
        return None, 400, f"Send a JSON object with the fields {names}."
    return {k: data[k] for k in fields if data.get(k) is not None}, None, None
