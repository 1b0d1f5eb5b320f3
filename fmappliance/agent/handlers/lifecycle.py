"""Start, stop and restart a stack; restart and migrate a site: one argv sequence each, from the stack's type."""

from __future__ import annotations

from fmappliance.agent.action_registry import handles


@handles("restart_stack", "start_stack", "stop_stack", "restart_site", "migrate_site")
def run_lifecycle(actions, ctx, request) -> None:
    actions.run_lifecycle(ctx, request)
