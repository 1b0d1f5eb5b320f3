"""The dashboard's fake agent speaks the real agent's vocabulary: the same action names, the same
site actions and the same timestamp format as fmappliance.wire and fmappliance.actions_table (which the
real agent uses).  tests/test_agent_contract.py compares the shapes of their answers."""

from __future__ import annotations

from datetime import datetime, timezone

import fake_agent
import pytest

from fmappliance import actions_table, wire


def test_the_fake_agent_knows_exactly_the_real_action_names_in_the_same_order():
    assert fake_agent.KNOWN_ACTIONS == actions_table.ACTIONS


def test_the_fake_agent_asks_a_site_for_exactly_the_real_site_actions():
    assert set(fake_agent.SITE_ACTIONS) == actions_table.SITE_ACTIONS


def test_the_fake_agent_writes_timestamps_the_way_the_real_agent_does():
    for epoch in (0, 1_764_000_000, 1_764_000_000.9, 4_102_444_799):
        written = fake_agent.iso(epoch)
        assert written == wire.format_timestamp(epoch)
        assert wire.parse_timestamp(written) == datetime.fromtimestamp(int(epoch), timezone.utc)


def test_the_fake_agent_answers_schedule_pushes_like_the_real_one(fake_agent, tmp_path):
    from support.agent_contract import ISO_UTC

    from fmappliance.agent.schedules import PushRejected, ScheduleRunner
    from fmappliance.dashboard.agent_client import AgentClient, AgentError

    client = AgentClient(fake_agent.url, fake_agent.token, 5)
    real = ScheduleRunner(str(tmp_path), start_job=lambda *a: None, list_sites=lambda s: [])
    entry = {"id": "s1", "stack": "prod", "site": "*", "frequency": "daily", "time": "02:00", "timezone": "UTC"}
    body = {"version": 12, "catchup_hours": 6, "schedules": [entry]}
    assert client.request("PUT", "/schedules", body)[1]["applied_version"] == real.push(body)[0] == 12
    older = {**body, "version": 11}
    with pytest.raises(AgentError) as fake_refusal:
        client.request("PUT", "/schedules", older)
    with pytest.raises(PushRejected) as real_refusal:
        real.push(older)
    expected = (409, "schedule version 11 is older than the applied 12")
    assert (fake_refusal.value.status, fake_refusal.value.message) == expected
    assert (real_refusal.value.status, real_refusal.value.message) == expected
    [shown] = client.request("GET", "/schedules")[1]["schedules"]
    [real_shown] = real.view()["schedules"]
    assert set(shown) == set(real_shown) and ISO_UTC.match(shown["next_due"])
