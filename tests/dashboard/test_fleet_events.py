"""The fleet's notifications, sent for real to a webhook: unreachable once after the delay, back once,
a clock warning once, joins and removals; every payload names its server."""

from __future__ import annotations

from support.config_factory import write_config

from fmappliance.config import SERVER_EVENTS, load_config
from fmappliance.dashboard.fleet_events import FleetEvents
from fmappliance.dashboard.notifications import Notifier


class _Registry:
    def __init__(self, names):
        self.names = list(names)

    def servers(self):
        return [{"name": n} for n in self.names]


class _Hub:
    def __init__(self):
        self.live = {}

    def state(self, name):
        return {"state": "online", "clock_skew_seconds": 0.5, "clock_warning": None, **self.live.get(name, {})}

    def _unreachable_sentence(self, name):
        return f"server {name} is unreachable since 2026-12-07T10:41:00Z (5 min ago)."


class _View:
    def __init__(self, names):
        self.registry = _Registry(names)
        self.hub = _Hub()


def test_server_events_are_sent_once_each_with_the_server(tmp_path, webhook):
    config = load_config(
        write_config(
            tmp_path,
            notifications={"webhook_url": webhook.url, "events": list(SERVER_EVENTS) + ["backup_failed"]},
            fleet={"notify_unreachable_after": 300, "local_name": "hq"},
        )
    )
    notifier = Notifier(config["notifications"])
    now = [1_000_000.0]
    view = _View(["erp-b", "erp-c"])
    events = FleetEvents(view, notifier, config, clock=lambda: now[0])

    assert events.check() == []  # what is there at start is not announced
    view.hub.live["erp-b"] = {"state": "connecting"}
    assert events.check() == []
    view.hub.live["erp-b"] = {"state": "unreachable"}
    now[0] += 299
    assert events.check() == []  # still within fleet.notify_unreachable_after
    now[0] += 1
    assert events.check() == ["server_unreachable"]
    now[0] += 600
    assert events.check() == []  # once per episode
    view.hub.live["erp-b"] = {"state": "online"}
    assert events.check() == ["server_back"]
    assert events.check() == []

    view.hub.live["erp-c"] = {"clock_skew_seconds": 420.0, "clock_warning": "erp-c's clock is 420 s ahead"}
    assert events.check() == ["server_clock_skew"]
    assert events.check() == []

    view.registry.names = ["erp-c", "erp-d"]
    assert events.check() == ["server_joined", "server_removed"]

    # A short drop (under the delay) sends nothing at all.
    view.hub.live["erp-d"] = {"state": "unreachable"}
    events.check()
    now[0] += 60
    view.hub.live["erp-d"] = {"state": "online"}
    assert events.check() == []

    assert notifier.flush(10)
    received = [(p["event"], p["server"], p["details"]["server"]) for p in webhook.received]
    assert received == [
        ("server_unreachable", "erp-b", "erp-b"),
        ("server_back", "erp-b", "erp-b"),
        ("server_clock_skew", "erp-c", "erp-c"),
        ("server_joined", "erp-d", "erp-d"),
        ("server_removed", "erp-b", "erp-b"),
    ]
    assert webhook.received[0]["details"]["message"].startswith("Server erp-b is unreachable since ")
    assert webhook.received[1]["details"]["unreachable_seconds"] == 900

    # Every other event names the dashboard's own server when it names none.
    notifier.notify("backup_failed", "Backup of site1 failed", {"stack": "prod"})
    assert notifier.flush(10)
    assert webhook.received[-1]["server"] == "hq" and webhook.received[-1]["details"]["server"] == "hq"
