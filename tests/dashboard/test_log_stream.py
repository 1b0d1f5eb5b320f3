"""Live logs through the dashboard: the SSE relay against the real agent and dashboard processes
over the docker double (headers, redaction, refusals before any stream, limits that hold and
recover, the agent's child killed when the browser goes), and the SSE body on its own."""

from __future__ import annotations

import html
import http.client
import http.cookiejar
import json
import re
import socket
import threading
import urllib.parse
import urllib.request

import pytest
from support.config_factory import TEST_PASSWORD, TEST_TOKEN, TEST_USER
from support.polling import wait_for
from support.world import build_world, kill_hanging_doubles, start_agent_and_dashboard

from fmappliance.dashboard.pages_logs import HEARTBEAT_SECONDS, sse_events

STREAM = "/stack/prod/logs/stream?service=backend"


class Operator:
    """Signed in to the dashboard over HTTP, as a browser would be."""

    def __init__(self, url: str, port: int):
        self.url, self.port = url, port
        jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with self.opener.open(url + "/login", timeout=10) as res:
            token = re.search(r'name="csrf_token" value="([^"]+)"', res.read().decode()).group(1)
        form = urllib.parse.urlencode({"username": TEST_USER, "password": TEST_PASSWORD, "csrf_token": token}).encode()
        with self.opener.open(urllib.request.Request(url + "/login", data=form, headers={"Origin": url}), timeout=10):
            pass
        self.cookie = next(c.value for c in jar if c.name == "fmsession")

    def json(self, path: str) -> dict:
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})
        with self.opener.open(request, timeout=10) as res:
            return json.loads(res.read())

    def stream(self, path: str = STREAM) -> Events:
        return Events(self.port, path, self.cookie)


class Events:
    """One EventSource-like connection; ``data`` lines and comments collected by a thread."""

    def __init__(self, port: int, path: str, cookie: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.request("GET", path, headers={"Cookie": f"fmsession={cookie}", "Accept": "text/event-stream"})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.raw: list[str] = []
        if self.resp.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for raw in self.resp:
                self.raw.append(raw.decode().rstrip("\n"))
        except (OSError, ValueError, http.client.HTTPException):
            pass

    @property
    def data(self) -> list[str]:
        return [line[len("data: ") :] for line in self.raw if line.startswith("data: ")]

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.conn.close()


@pytest.fixture
def served(tmp_path):
    """Factory: the world, the real agent and dashboard for ``config`` overrides; stopped at teardown."""
    started = []

    def start(agent=None, dashboard=None):
        world = build_world(tmp_path)
        started.append(world)
        agent_proc, dashboard_proc = start_agent_and_dashboard(world, agent=agent or {}, dashboard=dashboard or {})
        started.extend((agent_proc, dashboard_proc))
        return world, Operator(dashboard_proc.url, dashboard_proc.port)

    yield start
    for item in reversed(started):
        if hasattr(item, "ensure_stopped"):
            item.ensure_stopped()
        else:
            kill_hanging_doubles(item.doubles)


def live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def follow_pids(world) -> list[int]:
    return [c["pid"] for c in world.doubles.invocations("docker") if "logs" in c["argv"] and "--follow" in c["argv"]]


def test_lines_are_relayed_as_events_redacted_and_the_opening_is_audited(served):
    world, operator = served()
    world.doubles.write_log(world.compose_project, "backend", "started worker", f"token {TEST_TOKEN}")
    events = operator.stream()
    try:
        assert events.resp.status == 200
        assert events.resp.getheader("Content-Type").startswith("text/event-stream")
        assert events.resp.getheader("X-Accel-Buffering") == "no"
        assert events.resp.getheader("Cache-Control") == "no-store"
        wait_for(lambda: any(d.endswith(" started worker") for d in events.data), 10, "the tail")
        assert events.raw[0] == "retry: 5000"
        world.doubles.write_log(world.compose_project, "backend", "DB_PASSWORD=hunter2", "request served")
        wait_for(lambda: any(d.endswith(" request served") for d in events.data), 10, "a new line")
        joined = "\n".join(events.raw)
        assert "hunter2" not in joined and TEST_TOKEN not in joined
        assert any(d.endswith(" DB_PASSWORD=***") for d in events.data)
        assert all(d.startswith("frappe_docker-backend-1  | ") for d in events.data)
    finally:
        events.close()
    rows = [r for r in operator.json("/audit")["events"] if r["action"] == "logs_stream"]
    assert rows and rows[0]["target"] == "prod/backend" and rows[0]["result"] == "ok"


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("/stack/prod/logs/stream?service=nope", "has no service 'nope'"),
        ("/stack/prod/logs/stream?service=", "Name a service"),
        ("/stack/prod/logs/stream?service=a%20b", "Name a service"),
        ("/stack/prod/logs/stream?service=backend&tail=0", "tail must be"),
    ],
)
def test_bad_requests_are_400_before_any_stream_starts(served, path, fragment):
    world, operator = served()
    events = operator.stream(path)
    try:
        assert events.resp.status == 400
        assert not events.resp.getheader("Content-Type").startswith("text/event-stream")
        assert fragment in html.unescape(events.resp.read().decode())
    finally:
        events.close()
    assert follow_pids(world) == []


def test_the_agent_limit_answers_429_with_retry_after_and_recovers(served):
    world, operator = served(agent={"max_log_streams": 1})
    first = operator.stream()
    try:
        assert first.resp.status == 200
        second = operator.stream()
        assert second.resp.status == 429
        assert int(second.resp.getheader("Retry-After")) > 0
        assert "max_log_streams" in second.resp.read().decode()
        second.close()
        first.close()

        def reopened():
            stream = operator.stream()
            if stream.resp.status == 200:
                return stream
            stream.close()
            return None

        wait_for(reopened, 10, "the stream slot to come back").close()
    finally:
        first.close()
    results = [r["result"] for r in operator.json("/audit")["events"] if r["action"] == "logs_stream"]
    assert any(r.startswith("failed:") and "max_log_streams" in r for r in results)


def test_log_streams_share_the_relay_budget_with_downloads(served):
    # 9 request threads, 8 kept for pages: one relay slot.
    world, operator = served(dashboard={"threads": 9})
    first = operator.stream()
    try:
        assert first.resp.status == 200
        second = operator.stream()
        assert second.resp.status == 503 and int(second.resp.getheader("Retry-After")) > 0
        second.close()
        assert operator.json("/dashboard")["stacks"]  # pages still answer
    finally:
        first.close()
    wait_for(lambda: operator.stream().resp.status == 200, 10, "the relay slot to come back")


def test_closing_the_browser_side_kills_the_agents_child_within_2_s(served):
    world, operator = served()
    events = operator.stream()
    try:
        assert events.resp.status == 200
        wait_for(lambda: follow_pids(world), 10, "the logs child to start")
        [pid] = follow_pids(world)
        assert live(pid)
    finally:
        events.close()
    wait_for(lambda: not live(pid), 2.0, "the logs child to be killed")


# ---------------------------------------------------------------------- the SSE body alone


class FakeStream:
    def __init__(self, batches):
        self.batches = list(batches)
        self.closed = False

    def next_lines(self, timeout):
        return self.batches.pop(0) if self.batches else None

    def close(self):
        self.closed = True


def test_sse_body_heartbeats_while_quiet_ends_with_an_end_event_and_frees_its_slot():
    now = [0.0]

    def clock():
        now[0] += HEARTBEAT_SECONDS / 4  # each look at the clock: a quarter of the heartbeat
        return now[0]

    released = []
    stream = FakeStream([["a  | one", "a  | two"], [], [], [], [], [], ["a  | three"]])
    body = b"".join(sse_events(stream, lambda: released.append(1), lambda: False, clock=clock)).decode()
    assert body.startswith("retry: 5000\n")
    assert "data: a  | one\n\ndata: a  | two\n\n" in body
    assert ": keep-alive\n\n" in body
    assert body.index(": keep-alive") < body.index("data: a  | three")
    assert body.endswith("event: end\ndata: The log ended (the service stopped or its container was replaced).\n\n")
    assert stream.closed and released == [1]


def test_sse_body_stops_when_the_client_is_gone():
    released = []
    stream = FakeStream([[], [], []])
    chunks = list(sse_events(stream, lambda: released.append(1), lambda: True))
    assert chunks == [b"retry: 5000\n: stream open\n\n"]
    assert stream.closed and released == [1]


# ---------------------------------------------------------------------- the page (fake agent)


def test_the_logs_page_offers_the_stacks_services_and_loads_its_script_from_static(logged_in):
    response = logged_in.get("/stack/prod/logs?service=db")
    assert response.status == 200
    text = response.text
    assert '<option value="backend">backend</option>' in text
    assert '<option value="db" selected>db</option>' in text
    # An unknown service in the address falls back to backend.
    assert '<option value="backend" selected>' in logged_in.get("/stack/prod/logs?service=nope").text
    assert 'data-stream="/stack/prod/logs/stream"' in text
    assert re.search(r'<script src="/static/logs\.js\?v=[0-9a-f]+" defer></script>', text)
    assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script"
    assert logged_in.get("/static/logs.js").status == 200


def test_the_logs_page_for_an_unknown_or_malformed_stack(logged_in):
    assert logged_in.get("/stack/nosuch/logs").status == 404
    assert logged_in.get("/stack/..etc/logs").status == 400


def test_the_logs_pages_need_a_session(client):
    assert client.get("/stack/prod/logs").status == 303
    assert client.get("/stack/prod/logs/stream?service=backend").status == 303
