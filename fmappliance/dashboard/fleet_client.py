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
``FleetView`` gives the rows of ``GET /fleet`` (pages_fleet.py).
"""

from __future__ import annotations

import http.client
import logging
import secrets
import threading
import time

from fmappliance.dashboard.agent_client import AgentClient, AgentError
from fmappliance.dashboard.fleet_registry import FleetRegistry
from fmappliance.dashboard.hub import Hub, LinkUnavailable
from fmappliance.wire import format_timestamp

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
        # X-FM-Request (set by AgentClient): the id the server's fleet-audit.jsonl records, to match a dashboard row.
        headers = {"X-FM-Request": secrets.token_hex(8), **(headers or {}), "Connection": "close"}
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
    try:
        return Hub(config, registry).start(), registry
    except OSError as exc:
        raise OSError(f"the fleet hub cannot listen on {config['fleet']['listen']}: {exc.strerror or exc}") from None


#: Seconds a server's figures (stacks, backups, failed jobs) are reused by /fleet.
FIGURES_SECONDS = 10.0


class FleetView:
    """The rows of ``GET /fleet``: every server's link state and its last known figures.

    Figures come through the link (``GET /stacks``, ``GET /jobs``) at most every 10 s per server;
    when a server is not online its row keeps the last values, with their time.
    """

    def __init__(self, hub: Hub, registry: FleetRegistry, config: dict, local_agent=None, clock=time.time):
        self.hub = hub
        self.registry = registry
        self.local_agent = local_agent
        self.local_name = config["fleet"]["local_name"]
        self.timeout = float(config["fleet"]["request_timeout"])
        self.clock = clock
        self._figures: dict[str, tuple[float, dict]] = {}
        #: The last fetch's failure per server (shown until a fetch succeeds).
        self._problems: dict[str, str] = {}
        self._refreshing: set[str] = set()
        self._lock = threading.Lock()

    def client(self, name: str) -> AgentClient:
        """The agent client of ``name``: the local agent for fleet.local_name, else a FleetClient."""
        if name == self.local_name and self.local_agent is not None:
            return self.local_agent
        return FleetClient(self.hub, self.registry, name, self.timeout, cache_seconds=0)

    def overview(self) -> dict:
        servers = []
        if self.local_agent is not None:
            servers.append(self._row(self.local_name, None, {"address": "local"}))
        for row in self.registry.servers():
            servers.append(self._row(row["name"], self.hub.state(row["name"]), row))
        order = {"unreachable": 0, "agent_down": 1, "outdated": 2, "connecting": 3, "online": 4}
        servers.sort(key=lambda s: (order.get(s["state"], 0), s["name"]))
        return {"servers": servers}

    def _row(self, name: str, live: dict | None, row: dict) -> dict:
        figures, fetched, problem = self._figures_of(name, live)
        state = live["state"] if live else ("online" if problem is None else "agent_down")
        if live and problem and live["state"] == "online":
            state = "agent_down" if "agent does not answer" in problem else state
        return {
            "name": name,
            "state": state,
            "last_seen": live["last_seen"] if live else (format_timestamp(fetched) if fetched else None),
            "agent_version": (live or {}).get("agent_version") or row.get("agent_version"),
            "clock_skew_seconds": (live or {}).get("clock_skew_seconds"),
            "clock_warning": (live or {}).get("clock_warning"),
            "stacks_running": figures.get("stacks_running"),
            "stacks_total": figures.get("stacks_total"),
            "worst_backup_age_seconds": figures.get("worst_backup_age_seconds"),
            "failed_jobs_24h": figures.get("failed_jobs_24h"),
            # The schedule set the agent has applied (PUT /schedules; None before the first push).
            "schedules_version": figures.get("schedules_version"),
            "address": row.get("address"),
            "figures_as_of": format_timestamp(fetched) if fetched else None,
            "problem": problem,
        }

    def _figures_of(self, name: str, live: dict | None) -> tuple[dict, float | None, str | None]:
        now = self.clock()
        with self._lock:
            cached = self._figures.get(name)
            problem = self._problems.get(name)
        if cached and now - cached[0] < FIGURES_SECONDS:
            return cached[1], cached[0], problem
        if live is not None and not live["idle_connections"] and live["state"] != "online":
            return (cached[1], cached[0], None) if cached else ({}, None, None)
        if cached:
            # Stale: answer with the last figures now and fetch new ones off the request thread, one
            # fetch per server at a time (20 servers' round trips in one page view would cost its p99).
            with self._lock:
                start = name not in self._refreshing
                self._refreshing.add(name)
            if start:
                threading.Thread(target=self._refresh, args=(name, live), daemon=True).start()
            return cached[1], cached[0], problem
        return self._fetch(name, live)

    def _refresh(self, name: str, live: dict | None) -> None:
        try:
            self._fetch(name, live)
        except Exception:
            log.exception("fleet: refreshing the figures of %s failed", name)
        finally:
            with self._lock:
                self._refreshing.discard(name)

    def _fetch(self, name: str, live: dict | None) -> tuple[dict, float | None, str | None]:
        now = self.clock()
        with self._lock:
            cached = self._figures.get(name)
        try:
            client = self.client(name)
            stacks = client.request("GET", "/stacks")[1].get("stacks") or []
            jobs = client.jobs(limit=200)
        except AgentError as exc:
            with self._lock:
                self._problems[name] = exc.message
            return (cached[1] if cached else {}), (cached[0] if cached else None), exc.message
        figures = summarise(stacks, jobs, now)
        figures["schedules_version"] = _schedules_version(client)
        with self._lock:
            self._figures[name] = (now, figures)
            self._problems.pop(name, None)
        return figures, now, None


def _schedules_version(client) -> int | None:
    try:
        version = client.request("GET", "/schedules")[1].get("version")
    except AgentError:
        return None  # an agent from before schedules ran on the agents, or none pushed yet
    return version if isinstance(version, int) else None


def summarise(stacks: list, jobs: list, now: float) -> dict:
    """stacks running/total, the oldest newest-backup age over all sites, failed jobs in 24 h."""
    from fmappliance.wire import parse_timestamp

    def epoch(value) -> float | None:
        parsed = parse_timestamp(value)
        return parsed.timestamp() if parsed else None

    ages = []
    for stack in stacks:
        for backup in (stack.get("last_backups") or {}).values():
            created = epoch(backup.get("created")) if isinstance(backup, dict) else None
            ages.append(now - created if created is not None else float("inf"))
    failed = 0
    for job in jobs:
        if isinstance(job, dict) and job.get("status") == "failed":
            ended = epoch(job.get("finished") or job.get("started"))
            failed += ended is not None and now - ended <= 86400
    worst = max(ages) if ages else None
    return {
        "stacks_running": sum(1 for s in stacks if s.get("status") == "running"),
        "stacks_total": len(stacks),
        "worst_backup_age_seconds": None if worst is None or worst == float("inf") else int(worst),
        "failed_jobs_24h": failed,
    }
