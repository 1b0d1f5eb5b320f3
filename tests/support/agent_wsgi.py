"""An in-process WSGI client for the agent app (bearer token added by default) and ``wait_job``.
Used by tests/agent and the benchmarks (imported as ``support.agent_wsgi``)."""

from __future__ import annotations

import io
import json
import sys

from support.config_factory import TEST_TOKEN


class Response:
    def __init__(self, status: str, headers: list, body: bytes):
        self.status_line = status
        self.status = int(status.split()[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), (
            self.status,
            self.headers,
            self.body[:200],
        )
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status_line} {self.body[:200]!r}>"


class WsgiClient:
    """Calls a WSGI app in-process (no webtest needed)."""

    def __init__(self, app, token: str = TEST_TOKEN):
        self.app = app
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict | None = None,
        token: str | None | bool = True,
        query: str = "",
    ) -> Response:
        environ = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "9100",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if body:
            environ["CONTENT_LENGTH"] = str(len(body))
        if token is True:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            environ["HTTP_AUTHORIZATION"] = token
        for key, value in (headers or {}).items():
            name = key.upper().replace("-", "_")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[name] = value
            else:
                environ["HTTP_" + name] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"], captured["headers"] = status, response_headers

        result = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return Response(captured["status"], captured["headers"], data)

    def get(self, path: str, **kw) -> Response:
        if "?" in path:
            path, kw["query"] = path.split("?", 1)
        return self.request("GET", path, **kw)

    def post_json(self, path: str, data, **kw) -> Response:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, body=json.dumps(data).encode(), headers=headers, **kw)

    def post_action(self, action: str, stack: str, site: str | None = None, **kw) -> Response:
        data = {"action": action, "stack": stack}
        if site is not None:
            data["site"] = site
        return self.post_json("/action", data, **kw)


def wait_job(client, job_id: str, timeout: float = 30) -> dict:
    job = client.services.jobs.wait(job_id, timeout)
    assert job["status"] in ("succeeded", "failed"), job
    return job
