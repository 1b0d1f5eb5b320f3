"""Schedules per server: each agent gets only its own set (with its own version) through its own client,
its outcomes are notified with its ``server``, and pages under /s/<server>/scheduler add and list that
server's schedules.  Two servers have a stack named ``prod``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fake_agent import FakeAgent, make_stack
from support.config_factory import TEST_TOKEN

from fmappliance.dashboard.agent_client import AgentClient
from fmappliance.dashboard.fleet_schedules import FleetSchedules
from fmappliance.dashboard.schedule_store import ScheduleStore
from fmappliance.dashboard.schedule_sync import ScheduleSync


class _Registry:
    def __init__(self, names):
        self.names = names

    def servers(self):
        return [{"name": n} for n in self.names]

    def api_token(self, name):
        return TEST_TOKEN if name in self.names else None


class _View:
    def __init__(self, agents):
        self.agents = agents
        self.registry = _Registry(list(agents))

    def client(self, name):
        return AgentClient(self.agents[name].url, TEST_TOKEN, 5, cache_seconds=0)


@pytest.fixture
def remote():
    agent = FakeAgent(stacks=[make_stack("prod", ["b.example.com"])]).start()
    yield agent
    agent.stop()


CONFIG_SCHEDULES = [
    {"stack": "prod", "site": "site1.example.com", "frequency": "daily", "time": "02:00", "timezone": "UTC"},
    {
        "stack": "prod",
        "site": "site1.example.com",
        "frequency": "daily",
        "time": "02:00",
        "timezone": "UTC",
        "server": "erp-b",
    },
]


def test_each_server_gets_its_own_set_and_its_failures_name_it(tmp_path, fake_agent, remote):
    store = ScheduleStore(tmp_path / "state", config_schedules=CONFIG_SCHEDULES, default_tz="UTC")
    local_entry, remote_entry = store.list()
    # The same definition on two servers: two schedules (ids differ; the local one keeps its old id).
    assert local_entry["id"] != remote_entry["id"] and remote_entry["server"] == "erp-b"
    sent = []
    now = lambda: datetime.now(timezone.utc)  # noqa: E731
    local = ScheduleSync(
        store,
        AgentClient(fake_agent.url, TEST_TOKEN, 5),
        catchup_hours=6,
        notify=lambda *a: sent.append(a),
        clock=now,
        local_name="hq",
    )
    fleet = FleetSchedules(local, _View({"erp-b": remote}))
    assert local.push()
    (erp_b,) = fleet.syncs()
    assert erp_b.push()
    assert [s["id"] for s in fake_agent.schedule_set["schedules"]] == [local_entry["id"]]
    assert [s["id"] for s in remote.schedule_set["schedules"]] == [remote_entry["id"]]
    assert "server" not in remote.schedule_set["schedules"][0]  # the agent's schema is unchanged

    # Versions are kept apart: a change on erp-b bumps erp-b's version only.
    local_version = fake_agent.schedule_set["version"]
    store.add(
        {
            "stack": "prod",
            "site": "b.example.com",
            "frequency": "daily",
            "time": "04:00",
            "timezone": "UTC",
            "server": "erp-b",
        },
        "admin",
    )
    assert local.push() and erp_b.push()
    assert fake_agent.schedule_set["version"] == local_version and fake_agent.schedule_pushes == 1
    assert remote.schedule_set["version"] == 2 and len(remote.schedule_set["schedules"]) == 2

    # A failure recorded on erp-b (say while it was cut off) is notified once, naming erp-b.
    local.started_at = erp_b.started_at = now() + timedelta(seconds=5)
    remote.add_schedule_record(remote_entry["id"], "failed", message="disk full")
    assert local.watch() == 0
    assert erp_b.watch() == 1 and erp_b.watch() == 0
    event, subject, details, message = sent[-1]
    assert event == "backup_failed" and details["server"] == "erp-b"
    assert (
        subject == "Scheduled backup of site1.example.com on prod of server erp-b failed (while the dashboard was down)"
    )
    assert message == "disk full"


def test_the_schedules_page_under_a_prefix_is_that_servers(config, clock, fake_agent, remote):
    from support.wsgi import WSGIClient

    from fmappliance.dashboard.app import make_app

    config["fleet"]["local_name"] = "hq"
    app = make_app(config, clock=clock)

    class View(_View):
        local_name = "hq"

        def __init__(self):
            super().__init__({"erp-b": remote})
            self.hub = type("Hub", (), {"state": lambda self, n: {"state": "online"}})()

    app.ctx.services.fleet_view = View()
    app.ctx.scheduler.fleet = FleetSchedules(app.ctx.scheduler.sync, app.ctx.services.fleet_view)
    app.ctx.scheduler.fleet_syncs = app.ctx.scheduler.fleet.syncs
    client = WSGIClient(app)
    assert client.login().status == 303
    token = client.page_token("/s/erp-b/scheduler")
    fields = {
        "csrf_token": token,
        "kind": "backup",
        "stack": "prod",
        "site": "b.example.com",
        "frequency": "daily",
        "time": "03:00",
        "timezone": "UTC",
    }
    added = client.post("/s/erp-b/scheduler/add", data=fields, headers={"Accept": "application/json"})
    assert added.status == 200, added.text
    schedule_id = added.json()["schedule"]["id"]
    # Checked against erp-b's stacks: b.example.com is not a site of the local prod.
    refused = client.post("/scheduler/add", data=fields, headers={"Accept": "application/json"})
    assert refused.status == 400
    listed = client.get("/s/erp-b/scheduler", headers={"Accept": "application/json"}).json()["schedules"]
    assert [s["id"] for s in listed] == [schedule_id]
    assert client.get("/scheduler", headers={"Accept": "application/json"}).json()["schedules"] == []
    # The local page cannot change erp-b's schedule; its own page can.
    assert client.post(f"/scheduler/disable/{schedule_id}", data={"csrf_token": token}).status == 404
    assert client.post(f"/s/erp-b/scheduler/disable/{schedule_id}", data={"csrf_token": token}).status == 303
    page = client.get("/s/erp-b/scheduler").text
    assert 'hx-post="/s/erp-b/scheduler/add"' in page
    # The push reaches erp-b only.
    assert app.ctx.scheduler.push()
    assert [s["id"] for s in remote.schedule_set["schedules"]] == [schedule_id]
    assert not fake_agent.schedule_set or fake_agent.schedule_set["schedules"] == []
