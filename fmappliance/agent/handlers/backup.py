"""backup_site (bench's backup, verified and published) and import_backup (an uploaded set published as a backup)."""

from __future__ import annotations

from fmappliance import wire
from fmappliance.agent.action_registry import handles


@handles("backup_site")
def run_backup(actions, ctx, request) -> dict:
    assert request.site is not None  # start() checked it against the inventory
    label = request.options.get("label") or wire.MANUAL
    manifest = actions._backup(ctx, request.stack_name, request.stack, request.site, request.timeout, label=label)
    return {"backup": manifest}


def plan_import(actions, request) -> None:
    from fmappliance.agent.imports import find_import_set

    request.site = actions.inventory.check_site(request.stack_name, request.site)
    # ImportNotFound is an AgentError (404): the error plugin answers it.
    request.options["import_set"] = find_import_set(actions.config["backups"]["base_path"], request.options.get("name"))


@handles("import_backup", plan=plan_import)
def run_import(actions, ctx, request) -> dict:
    from fmappliance.agent.imports import publish_import

    import_set = request.options["import_set"]
    return {"backup": publish_import(ctx, actions.store, request.stack_name, request.site, import_set)}
