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
import json
import logging
import random
import selectors
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
    written from two threads at once."""
    tls.setblocking(False)
    plain.setblocking(False)
    to_plain = bytearray(first)
    to_tls = bytearray()
    sent = [len(first), 0]
    plain_eof = False
    sel = selectors.DefaultSelector()
    sel.register(tls, selectors.EVENT_READ)
    sel.register(plain, selectors.EVENT_READ)
    try:
        while True:
            if plain_eof and not to_tls:
                return sent[0], sent[1]
            tls_events = (selectors.EVENT_READ if len(to_plain) < BUFFER_CAP else 0) | (
                selectors.EVENT_WRITE if to_tls else 0
            )
            plain_events = (selectors.EVENT_READ if not plain_eof and len(to_tls) < BUFFER_CAP else 0) | (
                selectors.EVENT_WRITE if to_plain else 0
            )
            _set(sel, tls, tls_events)
            _set(sel, plain, plain_events)
            ready = {key.fileobj: mask for key, mask in sel.select(0 if tls.pending() else None)}
            # hub -> agent
            if tls_events & selectors.EVENT_READ and (tls.pending() or ready.get(tls, 0) & selectors.EVENT_READ):
                try:
                    data = tls.recv(CHUNK)
                    if not data:
                        return sent[0], sent[1]  # the dashboard hung up: the agent sees its client leave
                    to_plain += data
                    sent[0] += len(data)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if to_plain and ready.get(plain, 0) & selectors.EVENT_WRITE:
                try:
                    del to_plain[: plain.send(to_plain)]
                except BlockingIOError:
                    pass
            # agent -> hub
            if plain_events & selectors.EVENT_READ and ready.get(plain, 0) & selectors.EVENT_READ:
                try:
                    data = plain.recv(CHUNK)
                    if data:
                        to_tls += data
                        sent[1] += len(data)
                    else:
                        plain_eof = True
                except BlockingIOError:
                    pass
            if to_tls and ready.get(tls, 0) & selectors.EVENT_WRITE:
                try:
                    del to_tls[: tls.send(to_tls[:CHUNK])]
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
    except (OSError, ssl.SSLError) as exc:
        log.debug("splice ended: %s", exc)
        return sent[0], sent[1]
    finally:
        sel.close()


def _set(sel: selectors.BaseSelector, sock, events: int) -> None:
    key = sel.get_map().get(sock)
    if events == 0:
        if key is not None:
            sel.unregister(sock)
    elif key is None:
        sel.register(sock, events)
    elif key.events != events:
        sel.modify(sock, events)


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
