"""update_stack: back up every site, update, health-check; roll back on failure (Actions._update)."""

from __future__ import annotations

from fmappliance.agent.action_registry import handles


@handles("update_stack")
def run_update(actions, ctx, request):
    return actions._update(ctx, request.stack_name, request.stack, request.timeout)
