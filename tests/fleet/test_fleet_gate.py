"""What a server accepts from the fleet (fmappliance.agent.fleet_gate), in front of a recording app."""

from __future__ import annotations

import io
import json
import os
import time

from fmappliance.agent.fleet_gate import ENVIRON_KEY, FleetGate, token_sha256

LOCAL = "local-token-0123456789abcdef0123456789abcdef"
FLEET = "fleet-token-abcdefghijklmnopqrstuvwxyz0123456"


class RecordingApp:
    def __init__(self):
        self.calls = []

    def __call__(self, environ, start_response):
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        self.calls.append((environ.get(ENVIRON_KEY), environ["PATH_INFO"], body))
        status = "202 Accepted" if environ["REQUEST_METHOD"] == "POST" else "200 OK"
        start_response(status, [("Content-Type", "application/json")])
        return [b"{}"]


def _config(tmp_path, fleet_allowed=("backup_site",)):
    return {
        "security": {"token": LOCAL, "fleet_allowed_actions": list(fleet_allowed)},
        "agent": {"state_dir": str(tmp_path)},
    }


def _write_fleet(tmp_path, *tokens, server="erp-b"):
    path = tmp_path / "fleet.json"
    tmp = tmp_path / "fleet.json.tmp"
    tmp.write_text(json.dumps({"server": server, "tokens": list(tokens)}))
    os.replace(tmp, path)


def _call(gate, method, path, token, body=None, headers=None):
    raw = json.dumps(body).encode() if body is not None else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "CONTENT_LENGTH": str(len(raw)),
        "CONTENT_TYPE": "application/json",
        "wsgi.input": io.BytesIO(raw),
        **({"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}),
        **(headers or {}),
    }
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = int(status.split()[0])

    payload = b"".join(gate(environ, start_response))
    return seen["status"], (json.loads(payload) if payload else None)


def test_local_token_passes_unmarked_and_a_fleet_token_only_once_joined(tmp_path):
    app = RecordingApp()
    gate = FleetGate(app, _config(tmp_path))
    assert _call(gate, "GET", "/stacks", LOCAL)[0] == 200
    assert _call(gate, "GET", "/stacks", FLEET)[0] == 200
    assert app.calls[-2][0] is None and app.calls[-1][0] is None  # the app itself answers 401 to the second
    _write_fleet(tmp_path, {"sha256": token_sha256(FLEET), "expires": None})
    _call(gate, "GET", "/stacks", FLEET)
    assert app.calls[-1][0] == "erp-b"
    # A client cannot mark itself: the key is removed before anything else.
    _call(gate, "GET", "/stacks", "nope", headers={ENVIRON_KEY: "erp-b"})
    assert app.calls[-1][0] is None
    # Leaving (the file gone) takes effect on the next request, without a restart.
    os.unlink(tmp_path / "fleet.json")
    _call(gate, "GET", "/stacks", FLEET)
    assert app.calls[-1][0] is None


def test_expired_fleet_tokens_are_refused(tmp_path):
    app = RecordingApp()
    gate = FleetGate(app, _config(tmp_path))
    _write_fleet(tmp_path, {"sha256": token_sha256(FLEET), "expires": time.time() - 1})
    _call(gate, "GET", "/stacks", FLEET)
    assert app.calls[-1][0] is None


def test_fleet_allowed_actions_and_the_audit_file(tmp_path):
    app = RecordingApp()
    gate = FleetGate(app, _config(tmp_path))
    _write_fleet(tmp_path, {"sha256": token_sha256(FLEET), "expires": None})
    body = {"action": "restore_site", "stack": "prod", "site": "a.example.com", "backup": "2026-01-01_00-00-00"}
    status, answer = _call(gate, "POST", "/action", FLEET, body, {"HTTP_X_FM_REQUEST": "req-1"})
    assert status == 403
    assert (
        answer["message"]
        == "erp-b does not accept restore_site from the fleet (security.fleet_allowed_actions on erp-b)"
    )
    assert app.calls == []
    status, _ = _call(gate, "POST", "/action", FLEET, {"action": "backup_site", "stack": "prod", "site": "a"})
    assert status == 202
    assert json.loads(app.calls[-1][2])["action"] == "backup_site"  # the body reaches the app intact
    # The local dashboard is not limited by fleet_allowed_actions, and is not in the fleet audit.
    assert _call(gate, "POST", "/action", LOCAL, body)[0] == 202
    lines = [json.loads(line) for line in (tmp_path / "fleet-audit.jsonl").read_text().splitlines()]
    assert [(e["action"], e["result"], e["request_id"]) for e in lines] == [
        ("restore_site", 403, "req-1"),
        ("backup_site", 202, ""),
    ]
    assert oct((tmp_path / "fleet-audit.jsonl").stat().st_mode & 0o777) == "0o600"
    # GET /fleet/audit for both tokens, limited.
    for token in (LOCAL, FLEET):
        status, answer = _call(gate, "GET", "/fleet/audit", token)
        assert status == 200 and len(answer["entries"]) == 2
    assert _call(gate, "GET", "/fleet/audit", None)[0] == 200 and app.calls[-1][1] == "/fleet/audit"  # app: 401


def test_fleet_leave_forgets_the_tokens(tmp_path):
    token = FLEET
    app = RecordingApp()
    gate = FleetGate(app, _config(tmp_path))
    _write_fleet(tmp_path, {"sha256": token_sha256(token), "expires": None})
    status, answer = _call(gate, "POST", "/fleet/leave", token)
    assert status == 200 and answer["message"] == "erp-b forgot its fleet tokens."
    _call(gate, "GET", "/stacks", token)
    assert app.calls[-1][0] is None
