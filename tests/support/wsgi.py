"""The one in-process WSGI client of the test suite, for the agent app and the dashboard app.

It calls the app like a server would, keeps cookies per path like a browser, and, given a
``token``, sends ``Authorization: Bearer <token>`` like the dashboard's agent client does.
``FakeClock`` is a settable clock for sessions, throttling and ages; ``wait_job`` waits for an
agent job started through the client.
"""

from __future__ import annotations

import io
import json as jsonlib
import re
import time
import urllib.parse
from http.cookies import SimpleCookie
from wsgiref.headers import Headers

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
        #: Case-insensitive: ``headers["content-type"]``, ``headers.get(...)``, ``headers.get_all(...)``.
        self.headers = Headers(list(headers))
        self.body = body

    def header(self, name: str):
        return self.headers.get(name)

    def all(self, name: str) -> list:
        return self.headers.get_all(name)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        assert (self.headers.get("content-type") or "").startswith("application/json"), (
            self.status,
            self.headers,
            self.body[:200],
        )
        return jsonlib.loads(self.body)

    def csrf_token(self) -> str:
        """The token of the page: the login form's field or the csrf-token meta."""
        match = re.search(r'name="csrf-token" content="([^"]+)"', self.text) or re.search(
            r'name="csrf_token" value="([^"]+)"', self.text
        )
        assert match, "page has no CSRF token"
        return match.group(1)

    def __repr__(self):
        return f"<Response {self.status_line} {self.body[:200]!r}>"


class Streamed:
    """A response whose body has not been read: ``chunks`` as the app yields them; ``close()`` it."""

    def __init__(self, status: str, headers: list, result):
        self.status_line = status
        self.status = int(status.split()[0])
        self.header_list = list(headers)
        self.chunks = result

    def close(self) -> None:
        if hasattr(self.chunks, "close"):
            self.chunks.close()


class WSGIClient:
    """Calls a WSGI app in-process like a client would: cookies kept per path, an optional bearer token."""

    def __init__(
        self,
        app,
        *,
        token: str | None = None,
        host: str = "dash.test",
        scheme: str = "http",
        remote_addr: str = "203.0.113.7",
    ):
        self.app = app
        self.token = token
        self.host = host
        self.scheme = scheme
        self.remote_addr = remote_addr
        self.cookies: dict[tuple[str, str], str] = {}  # (name, path) -> value

    def cookie(self, name: str):
        return next((v for (n, _), v in self.cookies.items() if n == name), None)

    def request(self, method: str, url: str, **kw) -> Response:
        """One request, read to the end.  Keywords as for :meth:`stream`."""
        streamed = self.stream(method, url, **kw)
        try:
            out = b"".join(bytes(chunk) for chunk in streamed.chunks)
        finally:
            streamed.close()
        response = Response(streamed.status_line, streamed.header_list, out)
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

    def stream(
        self,
        method: str,
        url: str,
        *,
        body: bytes = b"",
        data=None,
        json=None,
        headers=None,
        remote_addr=None,
        origin="same",
        token: str | bool | None = True,
        query: str = "",
    ) -> Streamed:
        """Start a request and hand back its body unread (for downloads; close it when done).

        ``token``: True sends the client's token (if it has one), None sends no Authorization
        header, a string is sent as the whole header value.
        """
        path, _, url_query = url.partition("?")
        query = query or url_query
        headers = dict(headers or {})
        if data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        elif json is not None:
            body = jsonlib.dumps(json).encode()
            headers.setdefault("Content-Type", "application/json")
        if method == "POST" and origin == "same":
            headers.setdefault("Origin", f"{self.scheme}://{self.host}")
        if token is True and self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        elif isinstance(token, str):
            headers.setdefault("Authorization", token)
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
        }
        if body:
            environ["CONTENT_LENGTH"] = str(len(body))
        for name, value in headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[key] = value
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
        return Streamed(captured["status"], captured["headers"], result)

    def get(self, url, **kw) -> Response:
        return self.request("GET", url, **kw)

    def post(self, url, **kw) -> Response:
        return self.request("POST", url, **kw)

    def post_json(self, url: str, data, **kw) -> Response:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", url, body=jsonlib.dumps(data).encode(), headers=headers, **kw)

    def post_action(self, action: str, stack: str, site: str | None = None, **kw) -> Response:
        data = {"action": action, "stack": stack}
        if site is not None:
            data["site"] = site
        return self.post_json("/action", data, **kw)

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


def wait_job(client, job_id: str, timeout: float = 30) -> dict:
    """Wait for an agent job started through ``client`` (whose ``services`` are the agent's) to end."""
    job = client.services.jobs.wait(job_id, timeout)
    assert job["status"] in ("succeeded", "failed"), job
    return job
