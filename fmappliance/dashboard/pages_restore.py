"""Restore a backup (``/restore/<stack>/<site>/<id>``) and import backups made elsewhere (``/imports``).

Both are one page that says what will happen and a form: the target, then the target site's
name typed as confirmation. A wrong confirmation (or target) answers the form again with a
message under the field and starts nothing. A right one starts the agent's job
(``restore_site`` / ``import_backup``) and shows its live panel. Every attempt is an audit row,
refusals included.
"""

from __future__ import annotations

import bottle

from fmappliance.dashboard import negotiation, restore_flow, views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.wire import is_valid_backup_id, is_valid_import_name, is_valid_site_name, is_valid_stack_name

REFUSED_BY_AGENT = (400, 403, 404, 409)


def register(app: bottle.Bottle, ctx) -> None:
    def stacks_or_message():
        try:
            return restore_flow.stack_choices(ctx.agent.stacks()), ""
        except AgentError as exc:
            return [], exc.message

    def form_answer(template: str, status: int, errors: dict, page_values: dict, title: str):
        """The form again with its errors: a fragment for htmx, a page otherwise, JSON for API clients."""
        if negotiation.wants_json(bottle.request):
            message = errors.get("_form") or " ".join(errors.values())
            return ctx.json_response({"success": False, "message": message, "errors": errors}, status)
        bottle.response.status = status
        bottle.response.set_header("Cache-Control", "no-store")
        values = {**page_values, "errors": errors}
        if negotiation.is_htmx(bottle.request):
            return ctx.render("restore_form", csrf_token=ctx.session().csrf_token, **values["form"], errors=errors)
        return ctx.page(template, title, **values)

    def started_answer(action: str, audit_target: str, call):
        """Start the agent job; (answer, None) or (None, error message, status) when the agent refused."""
        session = ctx.session()
        try:
            answer = call()
        except AgentError as exc:
            ctx.audit.record(
                user=session.user,
                address=ctx.client_address(),
                action=action,
                target=audit_target,
                result=f"failed: {exc.message}",
            )
            return None, exc.message, exc.status if exc.status in REFUSED_BY_AGENT else 502
        job = answer.get("job") if isinstance(answer.get("job"), dict) else None
        job_id = job.get("id") if job else None
        message = str(answer.get("message") or "Started.")
        if answer.get("duplicate"):
            message += " (already queued or running; showing that job)"
        ctx.audit.record(
            user=session.user,
            address=ctx.client_address(),
            action=action,
            target=audit_target,
            result="duplicate" if answer.get("duplicate") else "started",
            job_id=job_id,
        )
        request = bottle.request
        if negotiation.wants_json(request):
            return ctx.json_response({"success": True, "message": message, "job": job}, 202), None, None
        if negotiation.is_htmx(request):
            return (
                ctx.render(
                    "action_result",
                    success=True,
                    message=message,
                    job=views.shape_job(job) if job else None,
                    duplicate=bool(answer.get("duplicate")),
                ),
                None,
                None,
            )
        ctx.sessions.add_flash(session, "ok", message)
        location = f"/jobs/{views.url_part(job_id)}" if job_id else "/dashboard"
        return bottle.HTTPResponse(status=303, headers={"Location": location}), None, None

    def refuse(action: str, audit_target: str, errors: dict) -> None:
        session = ctx.session()
        ctx.audit.record(
            user=session.user,
            address=ctx.client_address(),
            action=action,
            target=audit_target,
            result="refused: " + " ".join(errors.values()),
        )

    # ---- restore ----------------------------------------------------------------------

    def source_problem(stack, site, backup_id):
        if not is_valid_stack_name(stack):
            return "That is not a valid stack name."
        if not is_valid_site_name(site):
            return "That is not a valid site name."
        if not is_valid_backup_id(backup_id):
            return "That is not a backup id (they look like 2026-11-25_02-00-03)."
        return None

    def from_offsite() -> bool:
        """``?source=offsite``: the backup is restored from its offsite (restic) copy."""
        return bottle.request.query.get("source") == "offsite"

    def restore_values(stack, site, backup_id, backup, stacks, values, banner=""):
        url = f"/restore/{views.url_part(stack)}/{views.url_part(site)}/{views.url_part(backup_id)}"
        if from_offsite():
            url += "?source=offsite"
        form = {
            "url": url,
            "stacks": stacks,
            "values": values,
            "allow_create": True,
            "form_id": "restore-form",
            "heading": "Where to restore it",
            "button": "Restore now",
            "button_class": "danger",
        }
        return {
            "stack": stack,
            "site": site,
            "qstack": views.url_part(stack),
            "qsite": views.url_part(site),
            "backup": restore_flow.shape_backup(backup, ctx.now()) if backup else None,
            "offsite": from_offsite(),
            "form": form,
            "banner": banner,
            "errors": {},
        }

    def load_backup(stack, site, backup_id):
        """(backup or None, banner, error answer or None)."""
        try:
            if from_offsite():
                backup = ctx.agent.offsite_backup(stack, site, backup_id)
            else:
                backup = ctx.agent.backup(stack, site, backup_id)
        except AgentError as exc:
            if exc.status == 404:
                return None, "", ctx.fail(404, exc.message or f"There is no site {site} on stack {stack}.")
            return None, exc.message, None
        if backup is None:
            return (
                None,
                "",
                ctx.fail(
                    404,
                    f"There is no backup {backup_id} of {site} on stack {stack}; it may have been deleted by retention.",
                ),
            )
        return backup, "", None

    @app.get("/restore/<stack>/<site>/<backup_id>")
    @ctx.login_required
    def restore_page(stack, site, backup_id):
        problem = source_problem(stack, site, backup_id)
        if problem:
            return ctx.fail(400, problem)
        backup, banner, failed = load_backup(stack, site, backup_id)
        if failed is not None:
            return failed
        stacks, stacks_banner = stacks_or_message()
        query = bottle.request.query
        values = {
            "target_stack": query.getunicode("target_stack") or stack,
            "target_site": query.getunicode("target_site") or site,
            "create_site": query.getunicode("create_site") or "",
        }
        if negotiation.wants_json(bottle.request):
            if backup is None:
                return ctx.json_response({"success": False, "message": banner}, 502)
            return ctx.json_response({"backup": backup, "stacks": stacks})
        bottle.response.set_header("Cache-Control", "no-store")
        page_values = restore_values(stack, site, backup_id, backup, stacks, values, banner or stacks_banner)
        return ctx.page("restore", f"Restore {site}", **page_values)

    @app.post("/restore/<stack>/<site>/<backup_id>")
    @ctx.protected_post
    def restore_start(stack, site, backup_id):
        problem = source_problem(stack, site, backup_id)
        if problem:
            return ctx.fail(400, problem)
        fields, status, message = restore_flow.read_fields(bottle.request, restore_flow.RESTORE_FIELDS)
        if fields is None:
            return ctx.fail(status, message)
        source = f"from {stack}/{site} backup {backup_id}" + (" (offsite copy)" if from_offsite() else "")
        stacks, banner = stacks_or_message()
        values = {k: fields[k] for k in ("target_stack", "target_site", "create_site")}
        page_values = restore_values(stack, site, backup_id, None, stacks, values)
        if banner:
            return form_answer("restore", 502, {"_form": banner}, page_values, f"Restore {site}")
        target, errors = restore_flow.check_target(fields, stacks, allow_create=True)
        audit_target = f"{target['stack']}/{target['site']} {source}"
        if errors:
            refuse("restore_site", audit_target, errors)
            return form_answer(
                "restore", 400, errors, refill_backup(page_values, stack, site, backup_id), f"Restore {site}"
            )
        same = (target["stack"], target["site"]) == (stack, site)
        answer, message, status = started_answer(
            "restore_site",
            audit_target,
            lambda: ctx.agent.action(
                "restore_site",
                target["stack"],
                target["site"],
                backup=backup_id,
                from_stack=None if same else stack,
                from_site=None if same else site,
                create_site=True if target["create"] else None,
                source="offsite" if from_offsite() else None,
            ),
        )
        if answer is not None:
            return answer
        return form_answer(
            "restore", status, {"_form": message}, refill_backup(page_values, stack, site, backup_id), f"Restore {site}"
        )

    def refill_backup(page_values, stack, site, backup_id):
        """The page around a refused form describes the backup again (never needed for htmx or JSON)."""
        request = bottle.request
        if negotiation.wants_json(request) or negotiation.is_htmx(request):
            return page_values
        backup, _, failed = load_backup(stack, site, backup_id)
        if backup is not None and failed is None:
            page_values["backup"] = restore_flow.shape_backup(backup, ctx.now())
        return page_values

    # ---- imports ----------------------------------------------------------------------

    def import_dir() -> str:
        return ctx.config["backups"]["base_path"].rstrip("/") + "/_import/"

    def load_imports(shaped: bool = True):
        try:
            raw = [i for i in ctx.agent.imports() if isinstance(i, dict)]
        except AgentError as exc:
            return [], exc.message
        return ([restore_flow.shape_import(i) for i in raw] if shaped else raw), ""

    @app.get("/imports")
    @ctx.login_required
    def imports_page():
        if negotiation.wants_json(bottle.request):
            raw, banner = load_imports(shaped=False)
            if banner:
                return ctx.json_response({"success": False, "message": banner}, 502)
            return ctx.json_response({"imports": raw})
        imports, banner = load_imports()
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page("imports", "Imports", banner=banner, active="imports", imports=imports, import_dir=import_dir())

    def import_values(name, item, stacks, values, banner=""):
        form = {
            "url": f"/imports/{views.url_part(name)}",
            "stacks": stacks,
            "values": values,
            "allow_create": False,
            "form_id": "import-form",
            "heading": "Import it as a backup of",
            "button": "Import now",
        }
        return {"name": name, "item": item, "form": form, "banner": banner, "errors": {}, "import_dir": import_dir()}

    def find_import(name):
        imports, banner = load_imports()
        return next((i for i in imports if i["name"] == name), None), banner

    @app.get("/imports/<name>")
    @ctx.login_required
    def import_page(name):
        if not is_valid_import_name(name):
            return ctx.fail(400, "That is not the name of an import set.")
        item, banner = find_import(name)
        if item is None and not banner:
            return ctx.fail(404, f"There is no import set {name} in {import_dir()}.")
        stacks, stacks_banner = stacks_or_message()
        guessed_stack, guessed_site = restore_flow.guess_site(name, stacks)
        query = bottle.request.query
        values = {
            "target_stack": query.getunicode("target_stack") or guessed_stack,
            "target_site": query.getunicode("target_site") or guessed_site,
        }
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "import",
            f"Import {name}",
            active="imports",
            **import_values(name, item, stacks, values, banner or stacks_banner),
        )

    @app.post("/imports/<name>")
    @ctx.protected_post
    def import_start(name):
        if not is_valid_import_name(name):
            return ctx.fail(400, "That is not the name of an import set.")
        fields, status, message = restore_flow.read_fields(bottle.request, restore_flow.IMPORT_FIELDS)
        if fields is None:
            return ctx.fail(status, message)
        stacks, banner = stacks_or_message()
        values = {k: fields[k] for k in ("target_stack", "target_site")}
        page_values = import_values(name, None, stacks, values)
        title = f"Import {name}"
        if banner:
            return form_answer("import", 502, {"_form": banner}, page_values, title)
        target, errors = restore_flow.check_target(fields, stacks, allow_create=False)
        audit_target = f"{target['stack']}/{target['site']} from import {name}"
        if errors:
            refuse("import_backup", audit_target, errors)
            if not (negotiation.wants_json(bottle.request) or negotiation.is_htmx(bottle.request)):
                page_values["item"] = find_import(name)[0]
            return form_answer("import", 400, errors, page_values, title)
        answer, message, status = started_answer(
            "import_backup",
            audit_target,
            lambda: ctx.agent.action("import_backup", target["stack"], target["site"], name=name),
        )
        if answer is not None:
            return answer
        return form_answer("import", status, {"_form": message}, page_values, title)
