"""An in-process WSGI client for the dashboard that behaves like a browser (cookie jar per path),
and a settable clock.  Used by tests/dashboard (imported as ``support.dashboard_wsgi``)."""

from __future__ import annotations

import io
import json as jsonlib
import re
import time
import urllib.parse
from http.cookies import SimpleCookie

from support.config_factory import TEST_PASSWORD, TEST_USER


class FakeClock:
    """A settable clock (epoch seconds) for sessions, throttling and ages."""

    def __init__(self, now: float | None = None):
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Response:
    def __init__(self, status: str, headers: list, body: bytes):
        self.status_line = status
        self.status = int(status.split()[0])
        self.headers = headers
        self.body = body

    def header(self, name: str):
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def all(self, name: str) -> list:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return jsonlib.loads(self.body)

    def csrf_token(self) -> str:
        """The token of the page: the login form's field or the csrf-token meta."""
        match = re.search(r'name="csrf-token" content="([^"]+)"', self.text) or re.search(
            r'name="csrf_token" value="([^"]+)"', self.text
        )
        assert match, "page has no CSRF token"
        return match.group(1)


class WSGIClient:
    """Calls the WSGI app in-process like a browser would: cookies kept per path."""

    def __init__(self, app, *, host: str = "dash.test", scheme: str = "http", remote_addr: str = "203.0.113.7"):
        self.app = app
        self.host = host
        self.scheme = scheme
        self.remote_addr = remote_addr
        self.cookies: dict[tuple[str, str], str] = {}  # (name, path) -> value

    def cookie(self, name: str):
        return next((v for (n, _), v in self.cookies.items() if n == name), None)

    def request(
        self, method: str, url: str, *, data=None, json=None, headers=None, remote_addr=None, origin="same"
    ) -> Response:
        path, _, query = url.partition("?")
        body = b""
        headers = dict(headers or {})
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            headers.setdefault("Content-Type", "application/json")
        if method == "POST" and origin == "same":
            headers.setdefault("Origin", f"{self.scheme}://{self.host}")
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self.host,
            "SERVER_PORT": "443" if self.scheme == "https" else "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": self.host,
            "REMOTE_ADDR": remote_addr or self.remote_addr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": self.scheme,
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + key] = value
        sent = [c for (n, p), c in self.cookies.items() if path.startswith(p)]
        names = [n for (n, p) in self.cookies if path.startswith(p)]
        if sent:
            environ["HTTP_COOKIE"] = "; ".join(f"{n}={v}" for n, v in zip(names, sent))
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"], captured["headers"] = status, response_headers

        result = self.app(environ, start_response)
        try:
            out = b"".join(bytes(chunk) for chunk in result)
        finally:
            if hasattr(result, "close"):
                result.close()
        response = Response(captured["status"], captured["headers"], out)
        for raw in response.all("Set-Cookie"):
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                key = (name, morsel["path"] or "/")
                if morsel["max-age"] in ("0", "-1") or not morsel.value:
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value
        return response

    def get(self, url, **kw) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url, **kw) -> Response:
        return self.request("POST", url, **kw)

    def login(
        self, user: str = TEST_USER, password: str = TEST_PASSWORD, *, next_path: str = "", remote_addr=None
    ) -> Response:
        token = self.get("/login", remote_addr=remote_addr).csrf_token()
        return self.post(
            "/login",
            data={"username": user, "password": password, "csrf_token": token, "next": next_path},
            remote_addr=remote_addr,
        )

    def page_token(self, url: str = "/dashboard") -> str:
        return self.get(url).csrf_token()
