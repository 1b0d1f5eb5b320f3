"""Live logs through the dashboard: the SSE relay against the real agent and dashboard processes
over the docker double (headers, redaction, refusals before any stream, limits that hold and
recover, the agent's child killed when the browser goes), and the SSE body on its own."""

from __future__ import annotations

import html
import http.client
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request

import pytest
from support.config_factory import TEST_PASSWORD, TEST_PASSWORD_HASH, TEST_TOKEN, TEST_USER, write_config
from support.polling import wait_for
from support.streams import LineStream
from support.world import build_world, kill_hanging_doubles, start_agent_and_dashboard
from support.wsgi import WSGIClient

from fmappliance.config import load_config
from fmappliance.dashboard.app import make_app
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

    def stream(self, path: str = STREAM) -> LineStream:
        """One EventSource-like connection."""
        return LineStream(self.port, path, {"Cookie": f"fmsession={self.cookie}", "Accept": "text/event-stream"})


@pytest.fixture
def served(tmp_path):
    """Factory: the world, the real agent and dashboard for ``config`` overrides; stopped at teardown."""
    started = []

    def start(agent=None, dashboard=None):
        world = build_world(tmp_path)
        started.append(world)
        agent_proc, dashboard_proc = start_agent_and_dashboard(world, agent=agent or {}, dashboard=dashboard or {})
        started.extend((agent_proc, dashboard_proc))
        operator = Operator(dashboard_proc.url, dashboard_proc.port)
        operator.agent_port = agent_proc.port
        return world, operator

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
        assert events.lines[0] == "retry: 5000"
        world.doubles.write_log(world.compose_project, "backend", "DB_PASSWORD=hunter2", "request served")
        wait_for(lambda: any(d.endswith(" request served") for d in events.data), 10, "a new line")
        joined = "\n".join(events.lines)
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


def agent_follow(port: int) -> LineStream:
    """A followed log opened at the agent directly (another client of the agent), holding one of its slots."""
    held = LineStream(port, "/stacks/prod/logs?service=backend&follow=1", {"Authorization": f"Bearer {TEST_TOKEN}"})
    assert held.resp.status == 200
    return held


def test_the_agent_limit_answers_429_with_retry_after_and_recovers(served):
    world, operator = served(agent={"max_log_streams": 1})
    first = agent_follow(operator.agent_port)
    try:
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


# ------------------------------------------------- re-authorisation and per-user limits (fake agent)

ROLE_USERS = {
    "admin": TEST_PASSWORD_HASH,
    "ops": {"password": TEST_PASSWORD_HASH, "role": "operator"},
    **{f"view{i}": {"password": TEST_PASSWORD_HASH, "role": "viewer"} for i in range(3)},
}


class EndlessStream:
    """An agent log stream that always has a line (so an unchecked relay would never stop)."""

    def __init__(self):
        self.closed = False

    def next_lines(self, timeout):
        return ["backend-1  | a line"]

    def close(self):
        self.closed = True


@pytest.fixture
def roles_app(tmp_path, fake_agent, clock, monkeypatch):
    from fmappliance.dashboard import pages_logs

    monkeypatch.setattr(pages_logs, "RECHECK_SECONDS", 0.0, raising=False)  # re-check before every read
    config = load_config(
        write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "credentials": ROLE_USERS, "viewer_logs": True})
    )
    app = make_app(config, clock=clock)
    opened = []

    def open_log_stream(stack, service, tail, follow=True):
        opened.append(EndlessStream())
        return opened[-1]

    monkeypatch.setattr(app.ctx.agent, "open_log_stream", open_log_stream)
    app.opened = opened
    return app


def signed_in(app, user):
    client = WSGIClient(app)
    assert client.login(user).status == 303
    return client


def open_stream(client):
    streamed = client.stream("GET", STREAM)
    assert streamed.status == 200, streamed.status_line
    chunks = iter(streamed.chunks)
    assert next(chunks).startswith(b"retry: 5000")
    assert next(chunks).startswith(b"data: ")
    return streamed, chunks


def refusal(client):
    """The answer to a stream request that should be refused (an accepted one fails here, not hangs)."""
    streamed = client.stream("GET", STREAM)
    if streamed.status == 200:
        streamed.close()
        raise AssertionError("the stream was opened")
    streamed.close()
    return client.get(STREAM)


def ends_with_session_event(chunks) -> bool:
    rest = []
    for chunk in chunks:
        rest.append(bytes(chunk))
        if len(rest) > 3:
            return False  # still delivering lines
    return bool(rest) and rest[-1].startswith(b"event: end\ndata: Your session ended")


@pytest.mark.parametrize("how", ["logout", "idle expiry", "lifetime", "user removed", "demoted"])
def test_an_open_stream_ends_once_its_session_or_role_no_longer_allows_it(roles_app, clock, how):
    client = signed_in(roles_app, "ops")
    streamed, chunks = open_stream(client)
    if how == "logout":
        assert client.post("/logout", data={"csrf_token": client.page_token("/account")}).status == 303
    elif how == "idle expiry":
        clock.advance(31 * 60)
    elif how == "lifetime":
        for _ in range(12 * 4 + 1):  # active all along (a page view every 15 minutes), past session_max_hours
            clock.advance(15 * 60)
            client.get("/account")
    elif how == "user removed":
        del roles_app.ctx.users["ops"]
    else:
        roles_app.ctx.users["ops"] = (roles_app.ctx.users["ops"][0], "viewer")
        roles_app.ctx.config["dashboard"]["viewer_logs"] = False
    assert ends_with_session_event(chunks)
    streamed.close()
    assert roles_app.opened[0].closed
    # Its slots came back.
    assert roles_app.ctx.services.followed_logs.take("ops", True) is None


def test_a_stream_of_a_live_session_keeps_going_without_keeping_the_session_awake(roles_app, clock):
    client = signed_in(roles_app, "ops")
    streamed, chunks = open_stream(client)
    clock.advance(20 * 60)
    assert next(chunks).startswith(b"data: ")
    # The stream's checks are not activity: 11 more quiet minutes and the session has gone idle.
    clock.advance(11 * 60)
    assert ends_with_session_event(chunks)
    streamed.close()


def test_one_user_cannot_hold_every_followed_log_and_viewers_leave_a_slot_for_operators(roles_app):
    held = []
    viewers = [signed_in(roles_app, f"view{i}") for i in range(3)]
    for _ in range(3):
        held.append(open_stream(viewers[0])[0])
    fourth = refusal(viewers[0])
    assert fourth.status == 429 and int(fourth.header("Retry-After")) > 0
    assert "You already follow 3 logs" in fourth.text
    for _ in range(3):
        held.append(open_stream(viewers[1])[0])
    held.append(open_stream(viewers[2])[0])  # 7 of agent.max_log_streams (8) held by viewers
    refused = refusal(viewers[2])
    assert refused.status == 429 and "kept for operators and admins" in refused.text
    # The admin still gets the last one.
    admin = signed_in(roles_app, "admin")
    held.append(open_stream(admin)[0])
    # A closed stream gives its slot back.
    held.pop(0).close()
    held.append(open_stream(viewers[2])[0])
    for streamed in held:
        streamed.close()
