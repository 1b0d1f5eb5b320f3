"""offsite_copy (a site's new backups to the restic repository) and offsite_check (`restic check`)."""

from __future__ import annotations

from fmappliance.agent.action_registry import handles


@handles("offsite_copy")
def run_copy(actions, ctx, request):
    return actions.offsite.copy_site(ctx, request.stack_name, request.site)


@handles("offsite_check")
def run_check(actions, ctx, request):
    return actions.offsite.check(ctx)
