"""The hub's join door: a server without a client certificate sends exactly one ``POST /v1/join``
(at most 16 KiB, within the connection's 10 s) and gets one JSON answer.

The hub checks the token (known, unused, unexpired, name binding), the name rule, uniqueness and
``fleet.max_servers``, signs the CSR, makes a 32-byte API token and records the server
(fleet_registry.py).  Refusals are ``{"success": false, "message"}``: 400 name rule or bad request,
401 unknown token (the same text for a wrong secret), 403 token bound to another name, 409 name
taken or fleet full, 410 expired / used / revoked, 426 agent too old, 429 after
``JOIN_FAILURES_ALLOWED`` refusals from one address within ``JOIN_FAILURE_WINDOW`` seconds.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

from fmappliance.dashboard.fleet_registry import FleetRegistry, Joined, JoinRefused
from fmappliance.fleet import certs
from fmappliance.fleet.token import SERVER_NAME_RULE, is_valid_server_name
from fmappliance.version import __version__

log = logging.getLogger("fmappliance.dashboard.hub")

JOIN_MAX_BYTES = 16 * 1024
#: Refused join attempts per source address before the hub answers 429 for a while.
JOIN_FAILURES_ALLOWED = 10
JOIN_FAILURE_WINDOW = 600.0
MIN_AGENT_VERSION = (0, 2, 0)

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
_REASONS.update({410: "Gone", 413: "Payload Too Large", 426: "Upgrade Required", 429: "Too Many Requests"})


def version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def refusal(message: str) -> dict:
    return {"success": False, "message": message}


class JoinDoor:
    def __init__(self, registry: FleetRegistry, files, hub_sha256: str, max_servers: int, joined: Callable[..., None]):
        self.registry = registry
        self.files = files
        self.hub_sha256 = hub_sha256
        self.max_servers = max_servers
        self.joined = joined
        self._lock = threading.Lock()
        self._failures: dict[str, deque] = defaultdict(deque)

    def serve(self, sock: ssl.SSLSocket, source: str, deadline: float) -> None:
        """Read the one request on ``sock``, answer it, close it."""
        try:
            sock.setblocking(True)
            status, payload = self.answer(sock, source, deadline)
            body = json.dumps(payload).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n"
            )
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.sendall(head.encode() + body)
        except (OSError, ssl.SSLError) as exc:
            log.debug("fleet hub: join from %s ended: %s", source, exc)
        finally:
            sock.close()

    def _read_request(self, sock: ssl.SSLSocket, deadline: float) -> tuple[str, str, bytes] | int:
        """(method, path, body), or an HTTP status to refuse with."""
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > JOIN_MAX_BYTES:
                return 413
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                return 400
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return 400
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length < 0:
            return 400
        if len(head) + length > JOIN_MAX_BYTES:
            return 413
        while len(body) < length:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            chunk = sock.recv(length - len(body))
            if not chunk:
                return 400
            body += chunk
        return parts[0], parts[1], body[:length]

    def answer(self, sock: ssl.SSLSocket, source: str, deadline: float) -> tuple[int, dict]:
        request = self._read_request(sock, deadline)
        if isinstance(request, int):
            return request, refusal(
                "The join request is too large (at most 16 KiB)." if request == 413 else "That is not a join request."
            )
        method, path, body = request
        if (method, path) != ("POST", "/v1/join"):
            return 404, refusal("The fleet hub answers only POST /v1/join to a server without its certificate.")
        if self._throttled(source):
            return 429, refusal(f"Too many refused join attempts from {source}; wait 10 minutes and try again.")
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return 400, refusal("The join request must be a JSON object.")
        try:
            joined = self._join(data, source)
        except JoinRefused as exc:
            self._note_failure(source)
            log.warning("fleet hub: refused a join from %s (%s): %s", source, exc.status, exc.message)
            return exc.status, refusal(exc.message)
        log.info("fleet hub: server %s joined from %s", joined.server, source)
        return 200, {
            "success": True,
            "server": joined.server,
            "agent_cert_pem": joined.agent_cert_pem,
            "api_token": joined.api_token,
            "hub_sha256": self.hub_sha256,
        }

    def _join(self, data: dict, source: str) -> Joined:
        token_id, secret, name = data.get("token_id"), data.get("secret"), data.get("name")
        csr_pem, agent_version = data.get("csr_pem"), data.get("agent_version")
        if not isinstance(token_id, str) or not isinstance(secret, str) or not isinstance(csr_pem, str):
            raise JoinRefused(400, "The join request needs token_id, secret and csr_pem.")
        if name is not None and not is_valid_server_name(name):
            raise JoinRefused(400, f"{str(name)[:40]!r} is not a valid server name: {SERVER_NAME_RULE}.")
        if not isinstance(agent_version, str) or version_tuple(agent_version) < MIN_AGENT_VERSION:
            needed = ".".join(map(str, MIN_AGENT_VERSION))
            raise JoinRefused(
                426,
                f"This server's fmappliance ({str(agent_version)[:20]}) is too old for this dashboard "
                f"({__version__}, needs at least {needed}); upgrade it first.",
            )

        def sign(server: str) -> str:
            try:
                return certs.sign_csr(csr_pem, self.files.key, self.files.cert, server)
            except certs.CertError as exc:
                raise JoinRefused(400, f"csr_pem is not a usable certificate request ({exc}).") from None

        # Signing runs inside the registry's transaction (a few ms of openssl, once per join) so
        # that one token can never make two servers.
        joined = self.registry.redeem(
            token_id,
            secret,
            name,
            source,
            agent_version,
            self.max_servers,
            sign,
            certs.sha256_of_pem,
        )
        self.joined(force=True)
        return joined

    def _throttled(self, source: str) -> bool:
        with self._lock:
            times = self._failures[source]
            while times and time.monotonic() - times[0] > JOIN_FAILURE_WINDOW:
                times.popleft()
            return len(times) >= JOIN_FAILURES_ALLOWED

    def _note_failure(self, source: str) -> None:
        with self._lock:
            self._failures[source].append(time.monotonic())
