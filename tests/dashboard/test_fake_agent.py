"""The dashboard's fake agent speaks the real agent's vocabulary: the same action names, the same
site actions and the same timestamp format as fmappliance.names (which the real agent uses)."""

from __future__ import annotations

from datetime import datetime, timezone

import fake_agent

from fmappliance import names


def test_the_fake_agent_knows_exactly_the_real_action_names_in_the_same_order():
    assert fake_agent.KNOWN_ACTIONS == names.ACTIONS


def test_the_fake_agent_asks_a_site_for_exactly_the_real_site_actions():
    assert set(fake_agent.SITE_ACTIONS) == names.SITE_ACTIONS


def test_the_fake_agent_writes_timestamps_the_way_the_real_agent_does():
    for epoch in (0, 1_764_000_000, 1_764_000_000.9, 4_102_444_799):
        written = fake_agent.iso(epoch)
        assert written == names.format_timestamp(epoch)
        assert names.parse_timestamp(written) == datetime.fromtimestamp(int(epoch), timezone.utc)
