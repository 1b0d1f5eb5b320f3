"""Each fleet server gets its own schedules, pushed through its own link (issue 24, docs/fleet.md).

``schedules[].server`` (and the server of a page under ``/s/<server>/scheduler``) says which agent
runs a schedule.  :class:`FleetSchedules` keeps one :class:`ScheduleSync` per server of the registry,
over the same schedule store as the dashboard's own: each pushes that server only its own set with
its own version, and reads back its own outcome records with its own cursor, so what failed while a
server was cut off is notified once when it is back (with its ``server``).
"""

from __future__ import annotations

import threading

from fmappliance.dashboard.schedule_sync import ScheduleSync


class _ServerAgent:
    """A fleet server's agent as ScheduleSync uses it: a fresh client per request (a rotated token applies)."""

    def __init__(self, view, name: str):
        self.view = view
        self.name = name

    def request(self, method: str, path: str, body: dict | None = None):
        return self.view.client(self.name).request(method, path, body)


class FleetSchedules:
    def __init__(self, local: ScheduleSync, view):
        self.local = local
        self.view = view
        self._syncs: dict[str, ScheduleSync] = {}
        self._lock = threading.Lock()

    def syncs(self) -> list[ScheduleSync]:
        """The ScheduleSync of every server in the registry now (made on first use, kept)."""
        names = [row["name"] for row in self.view.registry.servers() if row["name"] != self.local.local_name]
        with self._lock:
            for name in names:
                if name not in self._syncs:
                    self._syncs[name] = ScheduleSync(
                        self.local.store,
                        _ServerAgent(self.view, name),
                        catchup_hours=self.local.catchup_hours,
                        notify=self.local._notify,
                        clock=self.local._clock,
                        server=name,
                        local_name=self.local.local_name,
                    )
            for gone in set(self._syncs) - set(names):
                del self._syncs[gone]
            return [self._syncs[name] for name in names]

    def of(self, name: str) -> ScheduleSync | None:
        return next((sync for sync in self.syncs() if sync.server == name), None)
