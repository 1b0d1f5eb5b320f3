"""The fleet hub inside the dashboard: a TLS 1.3 listener (``fleet.listen``) with three doors.

- **No client certificate**: the join door (hub_join.py).  Exactly one small request
  (``POST /v1/join``, at most 16 KiB, 10 s), answered and closed; handled in a short-lived
  thread because signing calls openssl.
- **A certificate the hub issued** (its sha256 known and not removed in the registry): the
  uplink sends its hello line, and the connection is parked idle in that server's pool until
  :meth:`Hub.take` hands it to a request (fleet_client.py).  Unknown or removed: closed without
  a byte.  A hello with ``"probe": true`` (``fm-agent fleet join`` waiting for its uplink) is
  answered with one line, the server's state and parked connections, and closed.
- **Anything else** fails the TLS handshake (the hub's certificate is the only issuer trusted).

One thread and a selector do the accepting, the non-blocking handshakes and the hello lines,
so a flood of slow or half-open connections costs a slot each, within the limits below, and
never a thread.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import os
import select
import selectors
import socket
import ssl
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from fmappliance.dashboard.fleet_registry import FleetRegistry
from fmappliance.dashboard.hub_join import MIN_AGENT_VERSION, JoinDoor, version_tuple
from fmappliance.fleet import certs
from fmappliance.fleet import tls as fleet_tls
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

MAX_HANDSHAKES = 64
MAX_PER_SOURCE = 8
HANDSHAKE_SECONDS = 10.0
HELLO_MAX_BYTES = 4096
#: More parked connections than an uplink's ``max`` (12) means something is wrong; the oldest go.
MAX_PARKED_PER_SERVER = 16
#: An uplink recycles its idle connections after 10 minutes; the hub drops any older than this.
PARKED_MAX_SECONDS = 11 * 60
#: How long a request waits for an uplink to top its pool up, when the server's link is up.
TOPUP_WAIT_SECONDS = 3.0
#: An address that parked a joined server's link this recently is that server's uplink: its new
#: connections (the top-ups replacing those requests used) are not held back by the global cap on
#: handshakes, only by the per-address one, so a flood from elsewhere cannot drain a server's pool.
LINKED_SOURCE_SECONDS = PARKED_MAX_SECONDS
#: Seconds a rotated-out API token keeps working on the server (requests already under way finish).
ROTATION_GRACE = 300

HUB_KEY = "hub.key"
HUB_CERT = "hub.crt"


class LinkUnavailable(Exception):
    """No connection to ``server`` can be had now; ``status`` 404/503 and the operator's sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Pending:
    sock: ssl.SSLSocket
    source: str
    deadline: float
    phase: str = "handshake"  # handshake | hello | join
    server: str = ""
    cert_sha256: str = ""
    buf: bytes = b""


@dataclass
class _Parked:
    sock: ssl.SSLSocket
    cert_sha256: str
    since: float


@dataclass
class _Link:
    """What the hub knows of one server's link (monotonic times; None: never)."""

    last_hello: float | None = None
    last_ok: float | None = None
    last_lost: float | None = None
    last_seen_wall: float | None = None
    agent: str = "ok"
    agent_version: str = ""
    clock_skew: float | None = None


@dataclass
class HubFiles:
    key: Path
    cert: Path

    @classmethod
    def of(cls, fleet_dir: str) -> HubFiles:
        return cls(Path(fleet_dir) / HUB_KEY, Path(fleet_dir) / HUB_CERT)


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def activated_listener(port: int) -> socket.socket | None:
    """The TCP socket systemd passed for ``port`` (socket activation: LISTEN_PID/LISTEN_FDS, fds from 3),
    so the dashboard service itself can keep ``IPAddressDeny=any``; None when there is none."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    try:
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return None
    for fd in range(3, 3 + count):
        try:
            candidate = socket.socket(fileno=fd)
        except OSError:
            continue
        if candidate.type == socket.SOCK_STREAM and candidate.family in (socket.AF_INET, socket.AF_INET6):
            if candidate.getsockname()[1] == port:
                return candidate
        candidate.detach()  # not ours: leave the fd as it was
    return None


class Hub:
    def __init__(self, config: dict, registry: FleetRegistry, *, wall_clock=time.time):
        fleet = config["fleet"]
        self.config = config
        self.fleet = fleet
        self.registry = registry
        self.wall_clock = wall_clock
        self.files = HubFiles.of(fleet["dir"])
        self.allow = [ipaddress.ip_network(n, strict=False) for n in fleet["allow_from"]]
        self.unreachable_after = float(fleet["unreachable_after"])
        self.max_clock_skew = int(fleet["max_clock_skew"])
        self.hub_sha256 = ""
        self.activated = False
        self._ctx: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._sel = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}
        self._per_source: dict[str, int] = defaultdict(int)
        self._linked_sources: dict[str, float] = {}  # address -> when it last parked a link (monotonic)
        self._joins = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pools: dict[str, list[_Parked]] = defaultdict(list)
        self._links: dict[str, _Link] = defaultdict(_Link)
        self._active: dict[str, str] = {}  # name -> cert sha256 of the servers not removed
        self._data_version = -1
        self._rotations: list[str] = []
        self._rotating: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._wake_r, self._wake_w = socket.socketpair()

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> Hub:
        if not (self.files.key.is_file() and self.files.cert.is_file()):
            raise OSError(
                f"fleet.listen is set but {self.fleet['dir']} holds no hub key and certificate; "
                "make them with: fm-dashboard fleet init"
            )
        self._ctx = fleet_tls.hub_context(str(self.files.cert), str(self.files.key))
        self.hub_sha256 = certs.sha256_of_pem(self.files.cert.read_bytes())
        host, port = parse_host_port(self.fleet["listen"])
        listener = activated_listener(port)
        self.activated = listener is not None
        if listener is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(128)
        listener.setblocking(False)
        self._listener = listener
        self._sel.register(listener, selectors.EVENT_READ, "accept")
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._refresh_registry(force=True)
        self._join_door = JoinDoor(
            self.registry, self.files, self.hub_sha256, self.fleet["max_servers"], joined=self._refresh_registry
        )
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fleet-hub", daemon=True)
        self._thread.start()
        log.info(
            "fleet hub listening on %s:%s%s (certificate sha256 %s)",
            host,
            self.port,
            " (socket from systemd)" if self.activated else "",
            self.hub_sha256,
        )
        return self

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1] if self._listener else 0

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        if self._thread:
            self._thread.join(5)
        with self._lock:
            for pool in self._pools.values():
                for parked in pool:
                    parked.sock.close()
            self._pools.clear()
        for pending in list(self._pending.values()):
            pending.sock.close()
        if self._listener:
            self._listener.close()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the selector loop -------------------------------------------------------------

    def _run(self) -> None:
        last_sweep = 0.0
        while not self._stopping.is_set():
            try:
                events = self._sel.select(timeout=0.5)
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            for key, _ in events:
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    try:
                        self._wake_r.recv(512)
                    except OSError:
                        pass
                else:
                    try:
                        self._advance(key.data)
                    except Exception:  # one bad connection (or a locked database) must not stop the hub
                        log.exception("fleet hub: connection from %s failed", key.data.source)
                        self._drop(key.data)
            now = time.monotonic()
            with self._lock:
                late = [p for p in self._pending.values() if p.phase != "join" and p.deadline <= now]
            for pending in late:
                log.debug("fleet hub: %s took too long (%s)", pending.source, pending.phase)
                self._drop(pending)
            if now - last_sweep >= 1.0:
                last_sweep = now
                try:
                    self._sweep()
                except Exception:  # the hub must outlive a bad sweep (e.g. a locked database)
                    log.exception("fleet hub: sweep failed")

    def _accept(self) -> None:
        assert self._listener is not None and self._ctx is not None  # started
        for _ in range(MAX_HANDSHAKES):
            try:
                raw, addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("fleet hub: accept failed: %s", exc)
                return
            source = _plain_address(addr[0])
            if self.allow and not any(ipaddress.ip_address(source) in net for net in self.allow):
                raw.close()
                continue
            with self._lock:
                full = len(self._pending) + self._joins >= MAX_HANDSHAKES and not self._linked_recently(source)
                full = full or self._per_source[source] >= MAX_PER_SOURCE
                if not full:
                    self._per_source[source] += 1
            if full:
                raw.close()
                continue
            fleet_tls.tune(raw)
            raw.setblocking(False)
            try:
                sock = self._ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            except (OSError, ssl.SSLError):
                raw.close()
                self._release(source)
                continue
            pending = _Pending(sock, source, time.monotonic() + HANDSHAKE_SECONDS)
            with self._lock:
                self._pending[id(pending)] = pending
            self._sel.register(sock, selectors.EVENT_READ, pending)

    def _linked_recently(self, source: str) -> bool:
        """Called with the lock held."""
        since = self._linked_sources.get(source)
        return since is not None and time.monotonic() - since < LINKED_SOURCE_SECONDS

    def _release(self, source: str) -> None:
        with self._lock:
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]

    def _forget(self, pending: _Pending) -> None:
        with self._lock:
            known = self._pending.pop(id(pending), None) is not None
        if known:
            self._release(pending.source)
        try:
            self._sel.unregister(pending.sock)
        except (KeyError, ValueError):
            pass

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        pending.sock.close()

    def _advance(self, pending: _Pending) -> None:
        if pending.phase == "handshake":
            try:
                pending.sock.do_handshake()
            except ssl.SSLWantReadError:
                self._sel.modify(pending.sock, selectors.EVENT_READ, pending)
                return
            except ssl.SSLWantWriteError:
                self._sel.modify(pending.sock, selectors.EVENT_WRITE, pending)
                return
            except (ssl.SSLError, OSError) as exc:
                log.debug("fleet hub: handshake with %s failed: %s", pending.source, exc)
                self._drop(pending)
                return
            cert_sha256 = fleet_tls.peer_sha256(pending.sock)
            if not cert_sha256:
                self._start_join(pending)
                return
            server = self._active_server(cert_sha256)
            if server is None:
                log.warning(
                    "fleet hub: refused a certificate not (or no longer) in the registry from %s", pending.source
                )
                self._drop(pending)
                return
            pending.phase, pending.server, pending.cert_sha256 = "hello", server, cert_sha256
            self._sel.modify(pending.sock, selectors.EVENT_READ, pending)
        if pending.phase == "hello":
            self._read_hello(pending)

    def _read_hello(self, pending: _Pending) -> None:
        while True:
            try:
                data = pending.sock.recv(HELLO_MAX_BYTES)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (ssl.SSLError, OSError):
                self._drop(pending)
                return
            if not data:
                self._drop(pending)
                return
            pending.buf += data
            if b"\n" in pending.buf:
                break
            if len(pending.buf) > HELLO_MAX_BYTES:
                self._drop(pending)
                return
        line, _, rest = pending.buf.partition(b"\n")
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if (
            rest
            or pending.sock.pending()
            or not isinstance(hello, dict)
            or hello.get("v") != 1
            or hello.get("server") != pending.server
        ):
            log.warning("fleet hub: %s (%s) sent a bad hello line; closed", pending.server, pending.source)
            self._drop(pending)
            return
        self._forget(pending)
        if hello.get("probe") is True:
            self._answer_probe(pending)
            return
        self._park(pending, hello)

    def _answer_probe(self, pending: _Pending) -> None:
        """``fm-agent fleet join`` asks, with the server's own certificate, whether the hub has its
        uplink's connections parked: one JSON line, then close (the probe is never parked itself)."""
        live = self.state(pending.server)
        line = {"server": pending.server, "state": live["state"], "idle_connections": live["idle_connections"]}
        try:
            pending.sock.setblocking(True)
            pending.sock.settimeout(1.0)
            pending.sock.sendall(json.dumps(line).encode() + b"\n")
        except (ssl.SSLError, OSError):
            pass
        finally:
            pending.sock.close()

    def _park(self, pending: _Pending, hello: dict) -> None:
        now = time.monotonic()
        with self._cond:
            pool = self._pools[pending.server]
            pool.append(_Parked(pending.sock, pending.cert_sha256, now))
            self._linked_sources[pending.source] = now
            while len(pool) > MAX_PARKED_PER_SERVER:
                pool.pop(0).sock.close()
            link = self._links[pending.server]
            link.last_hello = now
            link.last_seen_wall = self.wall_clock()
            link.agent = "down" if hello.get("agent") == "down" else "ok"
            link.agent_version = str(hello.get("agent_version") or "")[:40]
            sent_time = hello.get("time")
            if isinstance(sent_time, (int, float)) and not isinstance(sent_time, bool):
                link.clock_skew = round(float(sent_time) - self.wall_clock(), 1)
            self._cond.notify_all()

    # -- parked connections and the registry ---------------------------------------------

    def _refresh_registry(self, force: bool = False) -> None:
        version = self.registry.db.data_version()
        if not force and version == self._data_version:
            return
        self._data_version = version
        active = {row["name"]: row["cert_sha256"] for row in self.registry.servers()}
        with self._lock:
            gone = [name for name in self._active if name not in active]
            self._active = active
            # A server removed while linked is told to forget its token (POST /fleet/leave) on one
            # of its parked connections; the sweep closes the others.
            farewells = [(name, self._pools[name].pop()) for name in gone if self._pools.get(name)]
        for name, parked in farewells:
            threading.Thread(target=self._tell_to_leave, args=(name, parked.sock), daemon=True).start()
        self._rotations = self.registry.pending_rotations()

    def _tell_to_leave(self, name: str, sock: ssl.SSLSocket) -> None:
        token = self.registry.api_token(name, include_removed=True)
        status = _request_over(sock, "POST", "/fleet/leave", token or "", None) if token else None
        log.info("fleet hub: told removed server %s to forget its fleet token: %s", name, status or "not sent")

    def _rotate(self, name: str) -> None:
        """Push a pending token rotation to ``name`` through its link (the old token stays valid 5 min)."""
        try:
            pending = self.registry.pending_rotation(name)
            if pending is None:
                return
            old, new = pending
            sock = self.take(name, wait=0)
            body = {"sha256": hashlib.sha256(new.encode()).hexdigest(), "previous_valid_seconds": ROTATION_GRACE}
            status = _request_over(sock, "POST", "/fleet/tokens", old, body)
            if status == 200:
                self.registry.finish_rotation(name, new)
                log.info("fleet hub: rotated the API token of %s", name)
            else:
                log.warning("fleet hub: %s did not take its new token (%s); trying again later", name, status)
        except LinkUnavailable:
            pass
        finally:
            with self._lock:
                self._rotating.discard(name)

    def _active_server(self, cert_sha256: str) -> str | None:
        # The registry may have changed in another process (fm-dashboard fleet remove) a moment ago.
        return self.registry.server_for_certificate(cert_sha256)

    def _sweep(self) -> None:
        """Close parked connections that ended, sent something unasked, grew too old, or belong to
        a server no longer in the registry."""
        self._refresh_registry()
        for name in self._rotations:
            with self._lock:
                start = name not in self._rotating and bool(self._pools.get(name))
                if start:
                    self._rotating.add(name)
            if start:
                threading.Thread(target=self._rotate, args=(name,), daemon=True).start()
        now = time.monotonic()
        poller = select.poll()
        with self._lock:
            for source, since in list(self._linked_sources.items()):
                if now - since >= LINKED_SOURCE_SECONDS:
                    del self._linked_sources[source]
            parked_all = [(name, p) for name, pool in self._pools.items() for p in pool]
            for _, parked in parked_all:
                poller.register(parked.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
            ready = {fd for fd, _ in poller.poll(0)}
            for name, pool in self._pools.items():
                keep = []
                for parked in pool:
                    gone = (
                        parked.sock.fileno() in ready
                        or now - parked.since > PARKED_MAX_SECONDS
                        or self._active.get(name) != parked.cert_sha256
                    )
                    if gone:
                        parked.sock.close()
                    else:
                        keep.append(parked)
                if pool and not keep:
                    self._links[name].last_lost = now
                pool[:] = keep

    def take(self, server: str, wait: float = TOPUP_WAIT_SECONDS) -> ssl.SSLSocket:
        """A parked connection to ``server``, now blocking; LinkUnavailable when none can be had."""
        deadline = time.monotonic() + wait
        if server not in self._active:
            self._refresh_registry(force=True)  # joined a moment ago?
        with self._cond:
            if server not in self._active:
                raise LinkUnavailable(404, f"There is no server {server} in the fleet.")
            while True:
                pool = self._pools.get(server) or []
                while pool:
                    parked = pool.pop()
                    if _still_idle(parked.sock):
                        parked.sock.setblocking(True)
                        return parked.sock
                    parked.sock.close()
                remaining = deadline - time.monotonic()
                if not self._link_recent(server):
                    raise LinkUnavailable(503, self._unreachable_sentence(server))
                if remaining <= 0:
                    # Linked, but every connection its uplink keeps (at most 12) is carrying a request.
                    raise LinkUnavailable(
                        503, f"server {server} is busy: all its link's connections are in use; try again in a moment."
                    )
                self._cond.wait(remaining)

    def _link_recent(self, server: str) -> bool:
        link = self._links.get(server)
        recent = [t for t in (link.last_hello, link.last_ok) if t is not None] if link else []
        return bool(recent) and time.monotonic() - max(recent) < self.unreachable_after

    def _unreachable_sentence(self, server: str) -> str:
        link = self._links.get(server)
        if link is None or link.last_seen_wall is None:
            return f"server {server} is unreachable: its uplink has not connected since the dashboard started."
        ago = max(0, int(self.wall_clock() - link.last_seen_wall))
        when = format_timestamp(link.last_seen_wall)
        return f"server {server} is unreachable since {when} ({ago // 60} min ago)."

    def note(self, server: str, ok: bool, agent_down: bool = False) -> None:
        """A request through ``server``'s link ended: answered (``ok``), or the agent did not answer."""
        with self._lock:
            link = self._links[server]
            if ok:
                link.last_ok = time.monotonic()
                link.last_seen_wall = self.wall_clock()
                link.agent = "ok"
            elif agent_down:
                link.agent = "down"

    def state(self, server: str) -> dict:
        """online | connecting | agent_down | unreachable | outdated, with what is known of the link."""
        now = time.monotonic()
        with self._lock:
            link = self._links.get(server) or _Link()
            pooled = len(self._pools.get(server) or [])
            up = pooled > 0 or (link.last_ok is not None and now - link.last_ok < self.unreachable_after)
            if up and link.agent_version and version_tuple(link.agent_version) < MIN_AGENT_VERSION:
                state = "outdated"
            elif up:
                state = "agent_down" if link.agent == "down" else "online"
            elif now - self._started < self.unreachable_after or (
                link.last_lost is not None and now - link.last_lost < self.unreachable_after
            ):
                state = "connecting"
            else:
                state = "unreachable"
            return {
                "state": state,
                "idle_connections": pooled,
                "last_seen": format_timestamp(link.last_seen_wall) if link.last_seen_wall else None,
                "last_seen_timestamp": link.last_seen_wall,
                "agent_version": link.agent_version or None,
                "clock_skew_seconds": link.clock_skew,
                "clock_warning": (
                    f"{server}'s clock is {abs(link.clock_skew):.0f} s "
                    f"{'ahead of' if link.clock_skew > 0 else 'behind'} the dashboard's "
                    f"(fleet.max_clock_skew = {self.max_clock_skew}); the link and its schedules are "
                    "not affected, but times in its logs and backups are off: check its NTP."
                    if link.clock_skew is not None and abs(link.clock_skew) > self.max_clock_skew
                    else None
                ),
            }

    # -- the join door -----------------------------------------------------------------

    def _start_join(self, pending: _Pending) -> None:
        self._forget(pending)
        with self._lock:
            self._joins += 1
            self._per_source[pending.source] += 1  # still counts against its address until answered
        pending.phase = "join"
        threading.Thread(target=self._serve_join, args=(pending,), name="fleet-join", daemon=True).start()

    def _serve_join(self, pending: _Pending) -> None:
        try:
            self._join_door.serve(pending.sock, pending.source, pending.deadline)
        finally:
            with self._lock:
                self._joins -= 1
            self._release(pending.source)


def _request_over(sock: ssl.SSLSocket, method: str, path: str, token: str, body: dict | None) -> int | None:
    """One agent-API request of the hub's own over a parked connection; the status, None if none came."""
    conn = http.client.HTTPConnection("fleet", timeout=10)
    sock.setblocking(True)
    sock.settimeout(10)
    conn.sock = sock
    data = json.dumps(body).encode() if body is not None else b""
    headers = {"Authorization": f"Bearer {token}", "Connection": "close", "Content-Type": "application/json"}
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        resp.read(64 * 1024)
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
        sock.close()


def _plain_address(address: str) -> str:
    """``::ffff:192.0.2.7`` (an IPv4 client of a dual-stack listener) as ``192.0.2.7``."""
    try:
        parsed = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped or parsed)


def _still_idle(sock: ssl.SSLSocket) -> bool:
    """True when a parked connection has nothing to read (no EOF, no unasked bytes)."""
    if sock.pending():
        return False
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    except (ValueError, OSError):
        return False
    return not poller.poll(0)


__all__ = ["Hub", "HubFiles", "LinkUnavailable"]
