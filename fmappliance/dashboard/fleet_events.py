"""The fleet's notifications: a server's link lost and back, its clock, servers joining and leaving.

:class:`FleetEvents` looks at every server's link state every :data:`CHECK_SECONDS` (the serving
process runs it, like the scheduler) and sends, each once per episode:

- ``server_unreachable`` after ``fleet.notify_unreachable_after`` seconds without a link (the
  grace period of a dashboard start or a short drop sends nothing), then ``server_back`` when it
  is linked again;
- ``server_clock_skew`` when its clock drifts past ``fleet.max_clock_skew`` (again only after it
  was back in range);
- ``server_joined`` / ``server_removed`` when the registry gains or loses a server (what was
  there when the dashboard started is not announced again).

Every payload names the ``server``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fmappliance.background_loop import BackgroundLoop
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

CHECK_SECONDS = 10.0
_LINKED = ("online", "agent_down", "outdated")


@dataclass
class _Seen:
    down_since: float | None = None
    told_unreachable: bool = False
    told_skew: bool = False


class FleetEvents:
    def __init__(self, view, notifier, config: dict, clock=time.time):
        self.view = view
        self.notifier = notifier
        self.notify_after = float(config["fleet"]["notify_unreachable_after"])
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._known: set[str] | None = None
        # The first look after CHECK_SECONDS (the links need a moment to come up), then every CHECK_SECONDS.
        self._background = BackgroundLoop(
            "fleet-events",
            self.check,
            lambda: CHECK_SECONDS,
            first_delay=CHECK_SECONDS,
            logger=log,
            failure=f"fleet events: the check failed; trying again in {CHECK_SECONDS} s",
        )

    def check(self) -> list[str]:
        """One look at every server; returns the events sent (for tests and the log)."""
        sent: list[str] = []
        names = {row["name"] for row in self.view.registry.servers()}
        if self._known is not None:
            for name in sorted(names - self._known):
                sent.append(self._send("server_joined", name, f"Server {name} joined the fleet", {}))
            for name in sorted(self._known - names):
                self._seen.pop(name, None)
                sent.append(self._send("server_removed", name, f"Server {name} was removed from the fleet", {}))
        self._known = names
        now = self.clock()
        for name in sorted(names):
            seen = self._seen.setdefault(name, _Seen())
            live = self.view.hub.state(name)
            if live["state"] in _LINKED:
                if seen.told_unreachable:
                    down = int(now - (seen.down_since or now))
                    sent.append(
                        self._send(
                            "server_back",
                            name,
                            f"Server {name} is back",
                            {"unreachable_seconds": down},
                            f"The link to {name} is up again after {down // 60} min.",
                        )
                    )
                seen.down_since, seen.told_unreachable = None, False
            else:
                seen.down_since = seen.down_since or now
                if not seen.told_unreachable and now - seen.down_since >= self.notify_after:
                    seen.told_unreachable = True
                    sentence = self.view.hub._unreachable_sentence(name)
                    sent.append(
                        self._send(
                            "server_unreachable",
                            name,
                            f"Server {name} is unreachable",
                            {"since": format_timestamp(seen.down_since), "last_seen": live.get("last_seen")},
                            sentence[0].upper() + sentence[1:],
                        )
                    )
            warning = live.get("clock_warning")
            if warning and not seen.told_skew:
                seen.told_skew = True
                sent.append(
                    self._send(
                        "server_clock_skew",
                        name,
                        f"Server {name}'s clock is off",
                        {"clock_skew_seconds": live.get("clock_skew_seconds")},
                        warning,
                    )
                )
            elif not warning and live.get("clock_skew_seconds") is not None:
                seen.told_skew = False
        return sent

    def _send(self, event: str, server: str, subject: str, details: dict, message: str = "") -> str:
        log.info("fleet: %s (%s)", event, server)
        self.notifier.notify(event, subject, {**details, "server": server, "message": message or subject})
        return event

    def start(self) -> FleetEvents:
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()
