"""What the restore and import pages share: the submitted fields, the target checked against the
agent's inventory, the typed confirmation, and how a backup or import set is shown.

Pure functions of (fields, agent data), so the page code stays thin and the rules are easy to test.
"""

from __future__ import annotations

from fmappliance.dashboard import negotiation, views
from fmappliance.wire import is_valid_site_name, is_valid_stack_name

RESTORE_FIELDS = ("target_stack", "target_site", "create_site", "confirm")
IMPORT_FIELDS = ("target_stack", "target_site", "confirm")
MAX_JSON_BODY = 16 * 1024
_TRUE = ("1", "on", "true", "yes")


def read_fields(request, fields: tuple) -> tuple[dict | None, int | None, str | None]:
    """The submitted fields (form or JSON), every one as text, or (None, status, message)."""
    found, status, message = negotiation.read_fields(request, fields, max_bytes=MAX_JSON_BODY)
    if found is None:
        return None, status, message
    return {k: _text(found.get(k)) for k in fields}, None, None


def _text(value) -> str:
    if value is None:
        return ""
    return ("true" if value else "") if isinstance(value, bool) else str(value)


def is_checked(value) -> bool:
    return str(value or "").strip().lower() in _TRUE


def stack_choices(payload) -> list[dict]:
    """``[{"name", "type", "creates_sites", "sites"}]`` of a ``GET /stacks`` answer, odd entries skipped."""
    stacks = payload.get("stacks") if isinstance(payload, dict) else None
    out = []
    for stack in stacks if isinstance(stacks, list) else ():
        if isinstance(stack, dict) and isinstance(stack.get("name"), str):
            sites = stack.get("sites")
            sites = sites if isinstance(sites, list) else []
            out.append(
                {
                    "name": stack["name"],
                    "type": str(stack.get("type") or ""),
                    "creates_sites": stack.get("creates_sites") is True,
                    "sites": [str(s) for s in sites],
                }
            )
    return out


def check_target(values: dict, stacks: list[dict], *, allow_create: bool) -> tuple[dict, dict]:
    """(target, errors): the chosen target ``{"stack", "site", "create", "type"}`` and a message per
    wrong field. The confirmation must be the target site's name, typed exactly."""
    errors: dict[str, str] = {}
    stack_name = (values.get("target_stack") or "").strip()
    site = (values.get("target_site") or "").strip()
    create = allow_create and is_checked(values.get("create_site"))
    stack = next((s for s in stacks if s["name"] == stack_name), None)
    if not is_valid_stack_name(stack_name):
        errors["target_stack"] = "Choose the stack of the target site."
    elif stack is None:
        errors["target_stack"] = f"There is no stack named {stack_name}."
    if not is_valid_site_name(site):
        errors["target_site"] = "Type the target site's name, a host name such as erp.example.com."
    elif stack is not None:
        exists = site in stack["sites"]
        if create and not stack["creates_sites"]:
            errors["create_site"] = (
                f"{stack_name} is a Frappe Manager bench, which has exactly one site: create a new bench "
                "with `fm create` first, add it to the config, then restore onto its site."
            )
        elif create and exists:
            errors["create_site"] = f'{site} already exists on {stack_name}; untick "new site" to restore onto it.'
        elif not create and not exists:
            errors["target_site"] = f"There is no site {site} on {stack_name}" + (
                '; tick "new site" to create it.' if allow_create and stack["creates_sites"] else "."
            )
    confirm = (values.get("confirm") or "").strip()
    if not confirm:
        errors["confirm"] = f"Type the target site's name ({site or 'the site'}) to confirm."
    elif confirm != site:
        errors["confirm"] = (
            f"That is not the target site's name; type {site} exactly to confirm."
            if site
            else "Choose the target site first."
        )
    target = {"stack": stack_name, "site": site, "create": create, "type": stack["type"] if stack else ""}
    return target, errors


def shape_backup(backup: dict, now) -> dict:
    """A backup as the restore page describes it."""
    shaped = views.shape_backups([backup], now)[0]
    shaped["apps"] = app_names(backup.get("apps"))
    shaped["apps_known"] = backup.get("apps") is not None
    shaped["encrypted"] = bool(backup.get("encrypted"))
    return shaped


def app_names(apps) -> list[str]:
    """App names from a manifest's ``apps``: a list of names or of {"app"/"name": ...}, or
    ``bench list-apps --format json``'s ``{site: [names]}``."""
    if isinstance(apps, dict):
        apps = next((v for v in apps.values() if isinstance(v, list)), [])
    names = []
    for app in apps if isinstance(apps, list) else ():
        if isinstance(app, dict):
            app = app.get("app") or app.get("name") or app.get("app_name")
        if isinstance(app, str) and app:
            names.append(app)
    return names


def shape_import(item: dict) -> dict:
    files = item.get("files")
    files = [f for f in files if isinstance(f, dict)] if isinstance(files, list) else []
    problems = item.get("problems")
    problems = problems if isinstance(problems, list) else []
    return {
        "name": str(item.get("name") or ""),
        "qname": views.url_part(item.get("name") or ""),
        "files": [{"name": str(f.get("name") or ""), "size": views.human_size(f.get("size"))} for f in files],
        "size": views.human_size(sum(f.get("size") for f in files if isinstance(f.get("size"), int))),
        "problems": [str(p) for p in problems],
    }


def guess_site(import_name: str, stacks: list[dict]) -> tuple[str, str]:
    """(stack, site) whose site name matches the import set's (bench writes dots as "_"), or ("", "")."""
    tail = import_name.split("-", 1)[1] if "-" in import_name else import_name
    for stack in stacks:
        for site in stack["sites"]:
            if site.replace(".", "_") == tail or site == tail:
                return stack["name"], site
    return "", ""
