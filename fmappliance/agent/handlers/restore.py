"""restore_site (a backup onto a site, or into a new one) and test_restore (a backup into a throwaway site).

The plans run while the request waits, so a missing backup or a taken site name is a 4xx, not a
failed job; the runs are Actions._restore and Actions._test_restore.
"""

from __future__ import annotations

from fmappliance import wire
from fmappliance.agent import stacks
from fmappliance.agent.action_registry import handles


def plan_restore(actions, request) -> None:
    from fmappliance.agent.actions import ActionRejected
    from fmappliance.agent.restore import RestorePlan

    stack_name, stack, site, options = request.stack_name, request.stack, request.site, request.options
    create = options.get("create_site") is True
    if create:
        refusal = stacks.for_stack(stack).new_site_refusal()
        if refusal:
            raise ActionRejected(400, refusal)
        if not wire.is_valid_site_name(site):
            raise ActionRejected(400, f"That is not a valid site name (expected {wire.SITE_NAME_RULE}).")
        if site in actions.inventory.sites(stack_name, refresh=True):
            raise ActionRejected(409, f"{site} already exists on {stack_name}; restore onto it without create_site.")
    else:
        site = actions.inventory.check_site(stack_name, site)
    from_stack = options.get("from_stack") or stack_name
    from_site = options.get("from_site") or site
    actions.inventory.check_stack(from_stack)
    if not wire.is_valid_site_name(from_site):
        raise ActionRejected(400, f"from_site is not a valid site name (expected {wire.SITE_NAME_RULE}).")
    if options.get("source") == "offsite":
        manifest = actions.offsite_manifest(from_stack, from_site, options.get("backup"))
    else:
        manifest = actions.store.get_manifest(from_stack, from_site, options.get("backup"))
    if manifest is None:
        raise ActionRejected(404, f"There is no backup {options.get('backup')} of {from_site} on {from_stack}.")
    request.site = site
    options["plan"] = RestorePlan(stack_name, stack, site, manifest["id"], from_stack, from_site, create, manifest)


@handles("restore_site", plan=plan_restore)
def run_restore(actions, ctx, request) -> dict:
    offsite = request.options.get("source") == "offsite"
    return actions._restore(
        ctx, request.stack_name, request.stack, request.options["plan"], request.timeout, offsite=offsite
    )


def plan_test_restore(actions, request) -> None:
    """The backup (given, or the newest verified one) into a fresh throwaway site."""
    from fmappliance.agent.actions import ActionRejected
    from fmappliance.agent.restore import RestorePlan
    from fmappliance.agent.restore_proof import throwaway_name

    stack_name, options = request.stack_name, request.options
    site = request.site = actions.inventory.check_site(stack_name, request.site)
    source = options.get("source") or "local"
    if source not in wire.BACKUP_SOURCES:
        raise ActionRejected(400, "source must be 'local' or 'offsite'.")
    if source == "offsite" and not actions.offsite_enabled:
        raise ActionRejected(
            409,
            "Offsite copies are not configured on this agent, so only local backups can be tested; "
            "send source 'local' (or leave it out).",
        )
    backup_id = options.get("backup")
    if source == "offsite":
        if backup_id is None:
            raise ActionRejected(400, "Name the offsite backup to test (the backup field).")
        manifest = actions.offsite_manifest(stack_name, site, backup_id)
    else:
        if backup_id is None:
            verified = [b for b in actions.store.list_backups(stack_name, site) if b.get("verified")]
            if not verified:
                raise ActionRejected(
                    404, f"{site} on {stack_name} has no verified backup to test yet; back it up first."
                )
            backup_id = verified[0]["id"]
        manifest = actions.store.get_manifest(stack_name, site, backup_id)
    if manifest is None:
        raise ActionRejected(404, f"There is no backup {backup_id} of {site} on {stack_name}.")
    throwaway = throwaway_name(set(actions.inventory.sites(stack_name, refresh=True)))
    plan = RestorePlan(stack_name, request.stack, throwaway, manifest["id"], stack_name, site, True, manifest)
    options["plan"] = plan
    options["backup"] = plan.backup_id


@handles("test_restore", plan=plan_test_restore)
def run_test_restore(actions, ctx, request) -> dict:
    offsite = request.options.get("source") == "offsite"
    return actions._test_restore(
        ctx,
        request.stack_name,
        request.stack,
        request.site,
        request.options["plan"],
        request.timeout,
        offsite=offsite,
    )
