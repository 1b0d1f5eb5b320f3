"""Requests to a fleet server through its link, with the same interface as ``AgentClient``.

``FleetClient(hub, registry, name, timeout)`` is an ``AgentClient`` whose connections are the
idle TLS connections that server's uplink keeps parked at the hub: a page calls
``client.stacks()`` or ``client.action(...)`` and need not know which server it talks to.  Each
request takes one parked connection (the uplink splices it into its agent and opens a fresh
one), sends ``Connection: close`` and the server's own API token.

Failures carry the states' sentences: 503 "server erp-b is unreachable since …" when no link can
be had (refused at once, never queued), 502 "erp-b's uplink is connected but its agent does not
answer" when the link took the request and nothing came back.

``start_hub(config, services)`` starts the hub when ``fleet.listen`` is set (dashboard startup);
``fleet_overview(hub, registry)`` is the data of ``GET /fleet``.
"""

from __future__ import annotations

import http.client
import logging

from fmappliance.dashboard.agent_client import AgentClient, AgentError
from fmappliance.dashboard.fleet_registry import FleetRegistry
from fmappliance.dashboard.hub import Hub, LinkUnavailable

log = logging.getLogger(__name__)


class _LinkConnection(http.client.HTTPConnection):
    """An HTTP connection over a socket the hub hands out (no connect of its own)."""

    def __init__(self, sock, timeout: float):
        super().__init__("fleet", timeout=timeout)
        sock.settimeout(timeout)
        self.sock = sock

    def connect(self):  # the link is the connection; a second request needs a new one
        raise http.client.NotConnected("a fleet link carries one request")

    def request(self, method, url, body=None, headers=None, **kwargs):
        headers = {**(headers or {}), "Connection": "close"}
        super().request(method, url, body=body, headers=headers, **kwargs)


class FleetClient(AgentClient):
    """An AgentClient for the fleet server ``name``, through the hub."""

    def __init__(self, hub: Hub, registry: FleetRegistry, name: str, timeout: float, **kwargs):
        token = registry.api_token(name)
        if token is None:
            raise AgentError(f"There is no server {name} in the fleet.", 404)
        super().__init__("http://fleet", token, timeout, **kwargs)
        self.hub = hub
        self.server = name
        self.where = f"server {name} (fleet link)"

    def _connection(self):
        try:
            sock = self.hub.take(self.server)
        except LinkUnavailable as exc:
            raise AgentError(exc.message, exc.status) from None
        return _LinkConnection(sock, self.timeout)

    def _send(self, method, path, body=None, headers=None, on_sent=None):
        try:
            conn, resp = super()._send(method, path, body, headers, on_sent)
        except AgentError as exc:
            if exc.status is None and "did not answer within" not in exc.message:
                # The link took the request and closed without a byte: the uplink could not reach its agent.
                self.hub.note(self.server, ok=False, agent_down=True)
                raise AgentError(f"{self.server}'s uplink is connected but its agent does not answer.", 502) from None
            raise
        self.hub.note(self.server, ok=True)
        return conn, resp


def start_hub(config: dict, db) -> tuple[Hub, FleetRegistry]:
    """The hub of ``fleet.listen``, started (raises OSError with the operator's sentence)."""
    registry = FleetRegistry(db)
    return Hub(config, registry).start(), registry


def fleet_overview(hub: Hub, registry: FleetRegistry) -> dict:
    """``{"servers": [...]}`` for ``GET /fleet``: the registry's servers with their link state."""
    servers = []
    for row in registry.servers():
        live = hub.state(row["name"])
        servers.append(
            {
                "name": row["name"],
                "state": live["state"],
                "last_seen": live["last_seen"],
                "agent_version": live["agent_version"] or row["agent_version"],
                "clock_skew_seconds": live["clock_skew_seconds"],
                "address": row["address"],
                "joined": row["joined"],
            }
        )
    order = {"unreachable": 0, "agent_down": 1, "connecting": 2, "online": 3}
    servers.sort(key=lambda s: (order.get(s["state"], 0), s["name"]))
    return {"servers": servers}
