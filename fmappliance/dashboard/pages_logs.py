"""Live logs of a stack's services: the page, and the Server-Sent Events stream it reads.

``/stack/<name>/logs/stream?service=S`` relays the agent's followed log as SSE: one ``data:``
event per line, an ``: keep-alive`` comment every 15 s, an ``end`` event when the log ends.
Refusals come before any stream starts, as plain HTTP answers: an unknown service is a 400
(the agent checks it), too many followed logs a 429 (agent) or 503 (this dashboard's relay
budget, shared with downloads, see relays.py), both with Retry-After; one user may follow only
a few logs, and viewers leave a slot for operators and admins (429, relays.FollowedLogs).
Opening a stream is an audit row.  The relay ends - and closes the agent connection, which kills
the `docker compose logs` child - when the browser goes away: waitress reports it
(channel_request_lookahead), checked twice a second while the log is quiet, and a write to a
closed connection fails.  It also ends, with an ``end`` event, once its session is gone (logout,
expiry, a removed user, a changed password) or its role may no longer read it: re-checked every
:data:`RECHECK_SECONDS`, so a stream never outlives its session by more than that (issue 21.7).
"""

from __future__ import annotations

import collections
import logging
import re
import time

import bottle

from fmappliance.dashboard import views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.authorize import VIEWER
from fmappliance.wire import is_valid_stack_name

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 15.0
IDLE_CHECK_SECONDS = 0.5
TAIL_DEFAULT = 200
TAIL_MAX = 5000
RETRY_STREAM_SECONDS = 30
#: A stream that broke off (not ended) is re-opened for this long, every few seconds.
RESUME_SECONDS = 60.0
RESUME_EVERY_SECONDS = 2.0
#: Lines asked for when re-opening, and lines remembered to drop the ones the page already has.
RESUME_TAIL = 200
RESUME_OVERLAP_LINES = 200
#: How often an open stream checks that its session and role still allow it.
RECHECK_SECONDS = 5.0
SESSION_ENDED_EVENT = (
    b"event: end\ndata: Your session ended or may no longer read this log; sign in again to follow it.\n\n"
)
# Compose service names: letters, digits, '.', '_', '-' (checked against the stack by the agent).
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


def sse_events(stream, release, client_gone, clock=time.monotonic, still_allowed=lambda: True, reopen=None):
    """The SSE body: the agent's lines as events, heartbeats while quiet; frees everything at its end.

    ``still_allowed`` is asked every :data:`RECHECK_SECONDS`; False ends the stream with an ``end`` event.
    ``reopen`` (a new agent stream, or AgentError) is used when the stream broke off instead of ending
    (a fleet server's link dropped, the agent restarted): tried every :data:`RESUME_EVERY_SECONDS` for
    :data:`RESUME_SECONDS` while ``status`` events say so; the lines both streams hold are sent once.
    """
    sent: collections.deque[str] = collections.deque(maxlen=RESUME_OVERLAP_LINES)
    try:
        # Sent at once: the browser learns the stream is open, and a reconnect waits 5 s.
        yield b"retry: 5000\n: stream open\n\n"
        last_write = last_check = clock()
        while True:
            if clock() - last_check >= RECHECK_SECONDS:
                if not still_allowed():
                    yield SESSION_ENDED_EVENT
                    return
                last_check = clock()
            lines = stream.next_lines(IDLE_CHECK_SECONDS)
            if lines is None and getattr(stream, "broken", False) and reopen is not None:
                stream.close()
                resumed = yield from _resume(reopen, sent, client_gone, still_allowed, clock)
                if resumed is None:
                    return
                stream, lines = resumed
                last_write = last_check = clock()
            if lines is None:
                yield b"event: end\ndata: The log ended (the service stopped or its container was replaced).\n\n"
                return
            if lines:
                sent.extend(lines)
                yield "".join(f"data: {line}\n\n" for line in lines).encode("utf-8", "replace")
                last_write = clock()
            elif client_gone():
                return
            elif clock() - last_write >= HEARTBEAT_SECONDS:
                yield b": keep-alive\n\n"
                last_write = clock()
    finally:
        stream.close()
        release()


def _resume(reopen, sent, client_gone, still_allowed, clock):
    """Re-open a broken stream; (stream, the lines not sent yet) or None when given up (events said why)."""
    deadline = clock() + RESUME_SECONDS
    told = ""
    while True:
        try:
            stream = reopen()
        except AgentError as exc:
            if exc.status in (400, 404) or clock() >= deadline:
                yield (
                    f"event: end\ndata: The log stream broke off and could not be resumed: {_one_line(exc.message)}\n\n"
                ).encode("utf-8", "replace")
                return None
            if exc.message != told:
                told = exc.message
                yield f"event: status\ndata: Connection lost ({_one_line(exc.message)}); resuming…\n\n".encode(
                    "utf-8", "replace"
                )
            else:
                yield b": resuming\n\n"
            waited = clock()
            while clock() - waited < RESUME_EVERY_SECONDS:
                if client_gone():
                    return None
                time.sleep(IDLE_CHECK_SECONDS)
            if not still_allowed():
                yield SESSION_ENDED_EVENT
                return None
            continue
        # The new stream starts with the log's last lines: skip those this page already has.
        first: list[str] = []
        while True:
            more = stream.next_lines(IDLE_CHECK_SECONDS)
            if not more:
                break
            first.extend(more)
            if len(first) >= RESUME_TAIL:
                break
        yield b"event: status\ndata: Resumed after a lost connection.\n\n"
        return stream, _after_overlap(list(sent), first)


def _after_overlap(sent: list[str], fresh: list[str]) -> list[str]:
    """``fresh`` without its leading lines that end ``sent`` (the longest such overlap wins)."""
    for start in range(len(fresh)):
        tail = fresh[: len(fresh) - start]
        if len(tail) <= len(sent) and sent[len(sent) - len(tail) :] == tail:
            return fresh[len(tail) :]
    return fresh


def _one_line(text: str | None) -> str:
    return " ".join(str(text or "").split())[:300]


def register(app: bottle.Bottle, ctx) -> None:
    slots = ctx.services.relay_slots
    followed = ctx.services.followed_logs

    @app.get("/stack/<name>/logs")
    @ctx.login_required
    def logs_page(name):
        if not is_valid_stack_name(name):
            return ctx.fail(400, "That is not a valid stack name.")
        banner, services = "", []
        try:
            stack = ctx.agent.stack(name).get("stack") or {}
            services = sorted({str(s.get("service")) for s in stack.get("services") or () if isinstance(s, dict)})
        except AgentError as exc:
            if exc.status == 404:
                return ctx.fail(404, exc.message or f"There is no stack named {name}.")
            banner = exc.message
        wanted = bottle.request.query.getunicode("service", default="") or ""
        selected = wanted if wanted in services else ("backend" if "backend" in services else "frappe")
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "logs",
            f"Logs of {name}",
            banner=banner,
            name=name,
            qname=views.url_part(name),
            services=services,
            selected=selected if selected in services else (services[0] if services else ""),
        )

    @app.get("/stack/<name>/logs/stream")
    @ctx.login_required
    def logs_stream(name):
        request = bottle.request
        service = request.query.getunicode("service", default="") or ""
        raw_tail = request.query.getunicode("tail", default="") or str(TAIL_DEFAULT)
        if not is_valid_stack_name(name):
            return ctx.fail(400, "That is not a valid stack name.")
        if not _SERVICE_NAME.fullmatch(service):
            return ctx.fail(400, "Name a service of the stack: ?service=<name>.")
        if not raw_tail.isdigit() or not 1 <= int(raw_tail) <= TAIL_MAX:
            return ctx.fail(400, f"tail must be a whole number of lines from 1 to {TAIL_MAX}.")
        target = f"{name}/{service}"

        def audit(result: str) -> None:
            ctx.audit.record(
                user=ctx.user(), address=ctx.client_address(), action="logs_stream", target=target, result=result
            )

        user, session = ctx.user(), ctx.session()
        privileged = ctx.role() != VIEWER
        refused = followed.take(user, privileged)
        if refused:
            audit("refused: too many streams of this user or of viewers")
            answer = ctx.fail(429, refused)
            answer.set_header("Retry-After", str(RETRY_STREAM_SECONDS))
            return answer

        def release() -> None:
            slots.release()
            followed.give_back(user, privileged)

        if not slots.acquire(blocking=False):
            followed.give_back(user, privileged)
            audit("refused: too many streams")
            answer = ctx.fail(503, "Too many downloads and log streams are open at once; close one or try again soon.")
            answer.set_header("Retry-After", str(RETRY_STREAM_SECONDS))
            return answer
        try:
            stream = ctx.agent.open_log_stream(name, service, int(raw_tail), follow=True)
        except AgentError as exc:
            release()
            audit(f"failed: {exc.message}")
            # 503: a fleet server's link has every connection in use (its sentence says so).
            status = exc.status if exc.status in (400, 404, 429, 503) else 502
            answer = ctx.fail(status, exc.message)
            if status == 429:
                answer.set_header("Retry-After", exc.retry_after or str(RETRY_STREAM_SECONDS))
            return answer
        except BaseException:
            release()
            raise
        audit("ok")
        client_gone = request.environ.get("waitress.client_disconnected") or (lambda: False)
        headers = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            # nginx passes each event on at once instead of buffering the response.
            "X-Accel-Buffering": "no",
        }
        path = request.path

        def still_allowed() -> bool:
            return ctx.still_allowed(session.id_hash, "GET", path)

        agent = ctx.agent  # this request's server: a re-opened stream must come from the same one

        def reopen():
            return agent.open_log_stream(name, service, RESUME_TAIL, follow=True)

        body = sse_events(stream, release, client_gone, still_allowed=still_allowed, reopen=reopen)
        return bottle.HTTPResponse(body, status=200, headers=headers)
