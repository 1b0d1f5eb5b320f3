"""What a server accepts from its fleet dashboard: a WSGI layer in front of the agent's app.

- ``Authorization: Bearer`` is either ``security.token`` (the local dashboard; handled by the
  app as always) or a per-server fleet token, of which this server keeps only the sha256 in
  ``<agent.state_dir>/fleet.json`` (written by ``fm-agent fleet join``, re-read when it changes,
  so a join or a leave needs no restart).  Digests are compared with ``hmac.compare_digest``.
- A fleet request may start only the actions of ``security.fleet_allowed_actions`` (set on this
  server only, never widened from the dashboard).
- Each mutating fleet request is appended to ``<agent.state_dir>/fleet-audit.jsonl`` (time,
  request id, claimed actor, method, path, action, result): a record a compromised dashboard
  cannot erase.  ``GET /fleet/audit`` reads it; ``POST /fleet/leave`` (fleet token) makes this
  server forget its fleet tokens; ``POST /fleet/tokens`` (fleet token) adds a rotated one, the
  current ones staying valid ``previous_valid_seconds`` (300) more.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import threading
import time
from pathlib import Path

from fmappliance.bearer import bearer_token_matches
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

FLEET_FILE = "fleet.json"
AUDIT_FILE = "fleet-audit.jsonl"
#: Set by the gate for a request carrying a valid fleet token (a client cannot set environ keys).
ENVIRON_KEY = "fmappliance.fleet_server"
MAX_ACTION_BODY = 4096
AUDIT_LIMIT_MAX = 1000


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class FleetTokens:
    """The fleet token hashes of ``fleet.json``, re-read whenever the file changes."""

    def __init__(self, state_dir: str, clock=time.time):
        self.path = Path(state_dir) / FLEET_FILE
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._data: dict = {}

    def current(self) -> dict:
        try:
            st = os.stat(self.path)
            stamp: tuple | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                self._data = self._read() if stamp else {}
                self._stamp = stamp
            return self._data

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.error("cannot read %s (no fleet token is accepted until it is fixed): %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def match(self, header: str | None) -> str | None:
        """The server's name when ``header`` is ``Bearer <a current fleet token>``, else None."""
        data = self.current()
        tokens = data.get("tokens") or []
        if not header or not tokens:
            return None
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given or given != given.strip():
            return None
        digest = token_sha256(given).encode()
        now = self.clock()
        found = False
        for entry in tokens:
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                continue
            expires = entry.get("expires")
            ok = hmac.compare_digest(digest, entry["sha256"].encode("ascii", "replace"))
            if ok and (expires is None or now < float(expires)):
                found = True  # no early exit: the time taken does not tell which entry matched
        return str(data.get("server") or "fleet") if found else None


class FleetGate:
    """WSGI middleware: fleet tokens, fleet_allowed_actions, the fleet audit file."""

    def __init__(self, app, config: dict):
        self.app = app
        self.local_token = config["security"]["token"]
        self.allowed = set(config["security"]["fleet_allowed_actions"])
        self.state_dir = config["agent"]["state_dir"]
        self.tokens = FleetTokens(self.state_dir)
        self.audit_path = Path(self.state_dir) / AUDIT_FILE
        self._audit_lock = threading.Lock()

    def __getattr__(self, name):  # app.agent_services and friends stay reachable
        return getattr(self.app, name)

    def __call__(self, environ, start_response):
        environ.pop(ENVIRON_KEY, None)
        header = environ.get("HTTP_AUTHORIZATION")
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "")
        if bearer_token_matches(header, self.local_token):
            if path == "/fleet/audit" and method == "GET":
                return self._audit_page(environ, start_response)
            return self.app(environ, start_response)
        server = self.tokens.match(header)
        if server is None:
            return self.app(environ, start_response)  # the app answers 401 (or its public routes)
        environ[ENVIRON_KEY] = server
        if path == "/fleet/audit" and method == "GET":
            return self._audit_page(environ, start_response)
        if method in ("GET", "HEAD"):
            return self.app(environ, start_response)
        return self._mutating(environ, start_response, server, method, path)

    # -- mutating requests from the fleet -----------------------------------------------

    def _mutating(self, environ, start_response, server: str, method: str, path: str):
        action = None
        if path == "/action" and method == "POST":
            try:
                length = int(environ.get("CONTENT_LENGTH") or "0")
            except ValueError:
                length = -1
            if 0 <= length <= MAX_ACTION_BODY:
                body = environ["wsgi.input"].read(length) if length else b""
                environ["wsgi.input"] = io.BytesIO(body)
                try:
                    data = json.loads(body)
                    action = data.get("action") if isinstance(data, dict) else None
                except ValueError:
                    action = None
                if isinstance(action, str) and action not in self.allowed:
                    message = (
                        f"{server} does not accept {action[:40]} from the fleet "
                        f"(security.fleet_allowed_actions on {server})"
                    )
                    self._audit(environ, server, method, path, action, 403)
                    return _json(start_response, 403, message)
        if path == "/fleet/tokens" and method == "POST":
            status, message = self._rotate(environ)
            self._audit(environ, server, method, path, None, status)
            return _json(start_response, status, message, success=status == 200)
        if path == "/fleet/leave" and method == "POST":
            self._forget_tokens()
            self._audit(environ, server, method, path, None, 200)
            return _json(start_response, 200, f"{server} forgot its fleet tokens.", success=True)
        seen: dict = {}

        def recording_start_response(status, headers, exc_info=None):
            seen["status"] = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        result = self.app(environ, recording_start_response)
        self._audit(environ, server, method, path, action if isinstance(action, str) else None, seen.get("status"))
        return result

    def _rotate(self, environ) -> tuple[int, str]:
        """Add the dashboard's new token hash; the current ones keep working ``previous_valid_seconds``."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
            data = json.loads(environ["wsgi.input"].read(length)) if 0 < length <= MAX_ACTION_BODY else None
        except ValueError:
            data = None
        digest = data.get("sha256") if isinstance(data, dict) else None
        grace = data.get("previous_valid_seconds", 300) if isinstance(data, dict) else None
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            return 400, 'Send {"sha256": <64 hex digits of the new token>, "previous_valid_seconds": N}.'
        if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= 3600:
            return 400, "previous_valid_seconds must be a whole number from 0 to 3600."
        path = self.tokens.path
        with self._audit_lock:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                return 409, "This server has no fleet record to rotate (fleet.json)."
            until = time.time() + grace
            for entry in record.get("tokens") or []:
                if entry.get("expires") is None or float(entry["expires"]) > until:
                    entry["expires"] = until
            record.setdefault("tokens", []).append({"sha256": digest, "added": format_timestamp(), "expires": None})
            _write_private(path, record)
        return 200, f"New fleet token taken; the previous one works {grace} s more."

    def _forget_tokens(self) -> None:
        path = self.tokens.path
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        data["tokens"] = []
        data["left"] = format_timestamp()
        _write_private(path, data)

    def _audit(self, environ, server: str, method: str, path: str, action: str | None, status: int | None) -> None:
        entry = {
            "time": format_timestamp(),
            "request_id": str(environ.get("HTTP_X_FM_REQUEST", ""))[:64],
            "actor": str(environ.get("HTTP_X_FM_ACTOR", ""))[:128],
            "server": server,
            "method": method,
            "path": path[:256],
            "action": action,
            "result": status,
        }
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._audit_lock:
            # One write with O_APPEND: lines never interleave and nothing earlier is rewritten.
            fd = os.open(self.audit_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _audit_page(self, environ, start_response):
        from urllib.parse import parse_qs

        raw = (parse_qs(environ.get("QUERY_STRING", "")).get("limit") or ["100"])[0]
        if not raw.isdigit() or not 1 <= int(raw) <= AUDIT_LIMIT_MAX:
            return _json(start_response, 400, f"limit must be a whole number from 1 to {AUDIT_LIMIT_MAX}.")
        entries = []
        try:
            with open(self.audit_path, "rb") as fh:
                for line in fh:
                    try:
                        entries.append(json.loads(line))
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        body = json.dumps({"entries": entries[-int(raw) :]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def _write_private(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _json(start_response, status: int, message: str, success: bool = False):
    body = json.dumps({"success": success, "message": message}).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 409: "Conflict"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
