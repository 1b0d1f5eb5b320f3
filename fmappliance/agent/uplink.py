"""``fm-agent uplink [--dir D]``: keep a few TLS connections open to the dashboard's hub and splice
each one the hub starts using into the agent's socket.

The uplink reads only ``D`` (default /etc/fmappliance/fleet): ``uplink.json`` (hub address,
server name, how to reach the agent), ``agent.key``/``agent.crt`` (its client certificate) and
``hub.sha256`` (the pin).  It never reads config.yaml, never holds an API token and never parses
HTTP: the dashboard's request carries the per-server token and the agent checks it.

Per connection: TCP (``TCP_NODELAY``, keepalive) → TLS 1.3 with the client certificate → the
hub certificate's sha256 compared with the pin **before anything is written** → the hello line
→ wait.  The first byte from the hub means a request: connect to the agent, copy both ways until
either side ends, close.  ``idle`` (2) connections wait at any time, at most ``max`` (12) exist;
idle ones are recycled after 10 minutes (NAT tables forget quiet flows); failures back off
1 s → 60 s with jitter.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import random
import select
import signal
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from fmappliance.fleet import tls as fleet_tls
from fmappliance.version import __version__

log = logging.getLogger("fmappliance.uplink")

DEFAULT_DIR = "/etc/fmappliance/fleet"
IDLE = 2
MAX = 12
RECYCLE_SECONDS = 600.0
CONNECT_TIMEOUT = 10.0
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
#: A connection the hub kept this long (or used) was no failure: the backoff restarts (a removed server is
#: closed at once after its hello, so it keeps backing off).
HEALTHY_SECONDS = 5.0
CHUNK = 256 * 1024
#: Bytes waiting for the slower side before the faster one is no longer read (constant memory).
BUFFER_CAP = 1024 * 1024


class SettingsError(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    hub_host: str
    hub_port: int
    server: str
    agent: str  # unix:/path or http://127.0.0.1:PORT
    pin: str
    cert: str
    key: str
    idle: int = IDLE
    max: int = MAX
    source_address: str = ""  # tests bind each world's uplink to its own loopback address
    keepalive: tuple[int, int, int] | None = None  # TCP keepalive idle/interval/count (default fleet_tls.KEEPALIVE)

    @classmethod
    def load(cls, directory: str) -> Settings:
        d = Path(directory)
        try:
            data = json.loads((d / "uplink.json").read_text())
            pin = (d / "hub.sha256").read_text().strip()
        except FileNotFoundError as exc:
            raise SettingsError(
                f"{exc.filename} is missing: this server has not joined a fleet (fm-agent fleet join)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SettingsError(f"cannot read the uplink's files in {d}: {exc}") from None
        try:
            host, _, port = str(data["hub"]).rpartition(":")
            return cls(
                hub_host=host.strip("[]"),
                hub_port=int(port),
                server=str(data["server"]),
                agent=str(data["agent"]),
                pin=pin,
                cert=str(d / "agent.crt"),
                key=str(d / "agent.key"),
                idle=int(data.get("idle", IDLE)),
                max=int(data.get("max", MAX)),
                source_address=str(data.get("source_address", "")),
                keepalive=_keepalive(data.get("keepalive")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SettingsError(f"{d / 'uplink.json'} is not usable: {exc}") from None


def _keepalive(value) -> tuple[int, int, int] | None:
    if value is None:
        return None
    idle, interval, count = (int(v) for v in value)
    if min(idle, interval, count) < 1:
        raise ValueError("keepalive needs three whole numbers of at least 1: idle seconds, interval seconds, count")
    return idle, interval, count


def connect_agent(where: str, timeout: float = 5.0) -> socket.socket:
    """A plain connection to the agent: its Unix socket or http://127.0.0.1:PORT."""
    if where.startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: str | tuple[str, int] = where[5:]
    else:
        rest = where.split("://", 1)[-1].rstrip("/")
        host, _, port = rest.rpartition(":")
        sock = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = (host.strip("[]"), int(port))
    sock.settimeout(timeout)
    try:
        sock.connect(target)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def agent_answers(where: str) -> bool:
    try:
        connect_agent(where, timeout=2.0).close()
        return True
    except OSError:
        return False


def splice(tls: ssl.SSLSocket, plain: socket.socket, first: bytes) -> tuple[int, int]:
    """Copy both ways until the agent has answered and closed, or the hub hung up; returns bytes
    (to the agent, to the hub).  One thread, non-blocking: an SSL object must not be read and
    written from two threads at once.

    Built for a 1 GiB download (issue 24 §6: the link ≥ 0.5× a local download): the agent's bytes are
    read with ``recv_into`` reused buffers and handed to TLS as memoryviews (no copies in Python); while
    TLS waits, the agent's socket is still drained into further buffers, so the agent's sends complete
    (a partial send makes waitress read that part of the file again).  Each side is tried until it
    would block and only then waited for, with ``poll`` (whose registrations cost no system call), so
    a busy stream costs about one read and one TLS write per buffer.  At most BUFFER_CAP bytes wait
    for either side (constant memory; a short answer uses one buffer).
    """
    tls.setblocking(False)
    plain.setblocking(False)
    to_plain = bytearray(first)
    spare = [bytearray(CHUNK)]
    # Read from the agent, not yet taken by TLS: (buffer, its view, bytes in it), oldest first.
    filled: collections.deque[tuple[bytearray, memoryview, int]] = collections.deque()
    slots = max(1, BUFFER_CAP // CHUNK)
    sent = [len(first), 0]
    plain_eof = False
    # What the last try said: True until an operation would block, then until poll says otherwise.
    tls_can_read = plain_can_read = tls_can_write = plain_can_write = True
    tls_read_wants = tls_write_wants = select.POLLIN  # what TLS waits for when it would block
    poller = select.poll()
    tls_fd, plain_fd = tls.fileno(), plain.fileno()
    try:
        while True:
            progress = False
            # agent -> hub
            while filled and tls_can_write:
                buffer, view, length = filled[0]
                try:
                    # All of it or SSLWant* (the ssl module sets no SSL_MODE_ENABLE_PARTIAL_WRITE), so a
                    # retry sends the same bytes, as OpenSSL requires.
                    tls.send(view[:length])
                except ssl.SSLWantWriteError:
                    tls_can_write, tls_write_wants = False, select.POLLOUT
                except ssl.SSLWantReadError:
                    tls_can_write, tls_write_wants = False, select.POLLIN
                else:
                    filled.popleft()
                    spare.append(buffer)
                    sent[1] += length
                    progress = True
            while len(filled) < slots and not plain_eof and plain_can_read:
                buffer = spare.pop() if spare else bytearray(CHUNK)
                try:
                    length = plain.recv_into(buffer)
                except BlockingIOError:
                    plain_can_read = False
                    spare.append(buffer)
                    break
                if not length:
                    plain_eof = True
                    spare.append(buffer)
                    break
                filled.append((buffer, memoryview(buffer), length))
                progress = True
            if plain_eof and not filled:
                return sent[0], sent[1]
            # hub -> agent (a request body; the close that ends a followed log).
            if len(to_plain) < BUFFER_CAP and tls_can_read:
                try:
                    data = tls.recv(CHUNK)
                    if not data:
                        return sent[0], sent[1]  # the dashboard hung up: the agent sees its client leave
                    to_plain += data
                    sent[0] += len(data)
                    progress = True
                except ssl.SSLWantReadError:
                    tls_can_read, tls_read_wants = False, select.POLLIN
                except ssl.SSLWantWriteError:
                    tls_can_read, tls_read_wants = False, select.POLLOUT
            if to_plain and plain_can_write:
                try:
                    del to_plain[: plain.send(to_plain)]
                    progress = True
                except BlockingIOError:
                    plain_can_write = False
            if progress:
                continue
            tls_events = (tls_read_wants if len(to_plain) < BUFFER_CAP and not tls_can_read else 0) | (
                tls_write_wants if filled and not tls_can_write else 0
            )
            plain_events = (select.POLLIN if len(filled) < slots and not plain_eof and not plain_can_read else 0) | (
                select.POLLOUT if to_plain and not plain_can_write else 0
            )
            for fd, events in ((tls_fd, tls_events), (plain_fd, plain_events)):
                if events:
                    poller.register(fd, events)  # register() on a registered fd modifies it, in user space
                else:
                    try:
                        poller.unregister(fd)
                    except KeyError:
                        pass
            for fd, ready in poller.poll():
                if fd == tls_fd:
                    # An error or hang-up wakes every waiter: the next try reports it.
                    if ready & (tls_read_wants | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        tls_can_read = True
                    if ready & (tls_write_wants | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        tls_can_write = True
                else:
                    if ready & (select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        plain_can_read = True
                    if ready & (select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        plain_can_write = True
    except (OSError, ssl.SSLError) as exc:
        log.debug("splice ended: %s", exc)
        return sent[0], sent[1]


class PinMismatch(Exception):
    pass


class Uplink:
    """Keeps ``idle`` connections waiting (at most ``max`` in all) until :meth:`stop`."""

    def __init__(self, settings: Settings, *, clock=time.monotonic):
        self.settings = settings
        self.clock = clock
        self.ctx = fleet_tls.server_context(settings.cert, settings.key)
        self._lock = threading.Lock()
        self._waiting = 0  # connecting or idle
        self._busy = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._all_socks: set = set()

    def start(self) -> Uplink:
        for _ in range(self.settings.idle):
            self._spawn()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            for sock in list(self._all_socks):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def wait(self) -> None:
        while not self._stopping.wait(1.0):
            pass

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self._waiting, self._busy

    def _spawn(self) -> None:
        with self._lock:
            if self._waiting + self._busy >= self.settings.max:
                return
            self._waiting += 1
        thread = threading.Thread(target=self._slot, name="uplink", daemon=True)
        thread.start()

    def _slot(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._stopping.is_set():
            opened = self.clock()
            used = False
            try:
                used = self._one_connection()
            except PinMismatch as exc:
                log.error("%s", exc)
            except (OSError, ssl.SSLError) as exc:
                log.info("hub %s:%s: %s", self.settings.hub_host, self.settings.hub_port, exc)
            if used or self.clock() - opened >= HEALTHY_SECONDS:
                backoff = BACKOFF_FIRST
            else:
                self._stopping.wait(backoff * random.uniform(0.5, 1.5))
                backoff = min(BACKOFF_MAX, backoff * 2)
            if used:
                with self._lock:
                    self._busy -= 1
                    if self._waiting >= self.settings.idle:
                        return  # enough others wait; this thread ends
                    self._waiting += 1
        with self._lock:
            self._waiting -= 1

    def _track(self, sock, add: bool) -> None:
        with self._lock:
            (self._all_socks.add if add else self._all_socks.discard)(sock)

    def _one_connection(self) -> bool:
        """One connection from dial to close; True when it carried a request."""
        s = self.settings
        source = (s.source_address, 0) if s.source_address else None
        raw = socket.create_connection((s.hub_host, s.hub_port), timeout=CONNECT_TIMEOUT, source_address=source)
        self._track(raw, True)
        try:
            fleet_tls.tune(raw, s.keepalive)
            tls = self.ctx.wrap_socket(raw, server_side=False, do_handshake_on_connect=True)
            seen = fleet_tls.peer_sha256(tls)
            if seen != s.pin:
                # Nothing has been written: the check comes before the hello.
                raise PinMismatch(
                    f"the hub at {s.hub_host}:{s.hub_port} presented a certificate with sha256 {seen}, "
                    f"not the pinned {s.pin}; nothing was sent. Something intercepts the connection, "
                    "or the dashboard was reinstalled (then: fm-agent fleet leave, and join with a new token)."
                )
            hello = {
                "v": 1,
                "server": s.server,
                "agent": "ok" if agent_answers(s.agent) else "down",
                "agent_version": __version__,
                "time": round(time.time(), 3),
            }
            tls.settimeout(CONNECT_TIMEOUT)
            tls.sendall(json.dumps(hello, separators=(",", ":")).encode() + b"\n")
            tls.settimeout(RECYCLE_SECONDS * random.uniform(0.9, 1.0))
            try:
                first = tls.recv(CHUNK)
            except TimeoutError:
                return False  # recycled: a fresh connection replaces it at once
            if not first:
                raise OSError("the hub closed the connection (removed from the fleet, or the dashboard restarted)")
            with self._lock:
                self._waiting -= 1
                self._busy += 1
            self._top_up()
            try:
                agent = connect_agent(s.agent)
            except OSError as exc:
                log.warning("the agent at %s does not answer: %s", s.agent, exc)
                return True
            try:
                splice(tls, agent, first)
            finally:
                agent.close()
            return True
        finally:
            self._track(raw, False)
            raw.close()

    def _top_up(self) -> None:
        with self._lock:
            short = self._waiting < self.settings.idle and self._waiting + self._busy < self.settings.max
        if short:
            self._spawn()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fm-agent uplink", description="Keep this server's link to its dashboard.")
    parser.add_argument("--dir", default=DEFAULT_DIR, help=f"the uplink's files (default {DEFAULT_DIR})")
    args = parser.parse_args(argv)
    from fmappliance.logsetup import setup_logging

    setup_logging([])
    try:
        settings = Settings.load(args.dir)
        uplink = Uplink(settings)
    except (SettingsError, OSError, ssl.SSLError) as exc:
        print(f"fm-agent uplink: {exc}", file=sys.stderr)
        return 2

    def stop(signum, frame):
        log.info("stopping (signal %s)", signal.Signals(signum).name)
        uplink.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "uplink of %s to %s:%s (agent %s, %d idle connections)",
        settings.server,
        settings.hub_host,
        settings.hub_port,
        settings.agent,
        settings.idle,
    )
    uplink.start().wait()
    return 0
