"""The dashboard's ``GET /metrics``: the agent's series relayed as they are, plus ``fmappliance_agent_up``.

Prometheus needs neither a session nor the agent's token: it sends the scrape token of
``dashboard.metrics_token_file``, compared in constant time.  The schedule series
(``fmappliance_schedule_lateness_seconds``, ``fmappliance_schedule_missed_total``) come from
the agent, which runs the schedules; the dashboard relays them with the rest.
"""

from __future__ import annotations

from fmappliance.prometheus_text import Family, render


def dashboard_metrics_text(agent_text: str | None) -> str:
    """The agent's exposition (None: unreachable) followed by the dashboard's own family."""
    agent_up = Family("fmappliance_agent_up", "gauge", "1 when the dashboard could read the agent's metrics, else 0.")
    agent_up.add(1 if agent_text is not None else 0)
    own = render([agent_up])
    if not agent_text:
        return own
    return agent_text + ("" if agent_text.endswith("\n") else "\n") + own
