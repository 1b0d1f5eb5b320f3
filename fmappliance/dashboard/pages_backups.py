"""The backups page of a site and backup downloads.

Downloads are relayed from the agent chunk by chunk (constant memory, Range passed
through), or, with ``dashboard.download_mode: accel``, handed to nginx with
``X-Accel-Redirect`` after the agent confirmed the file (HEAD) — nginx then sends it
with sendfile and no dashboard thread is held (docs/pitfalls.md, nginx).
"""

from __future__ import annotations

import logging

import bottle

from fmappliance.dashboard import negotiation, views
from fmappliance.dashboard.agent_client import AgentError
from fmappliance.dashboard.relays import relay_slot_count
from fmappliance.wire import is_valid_backup_file_name, is_valid_site_name, is_valid_stack_name

log = logging.getLogger(__name__)

# Downloads share the relay budget with log streams (relays.py).
download_slots = relay_slot_count

RETRY_DOWNLOAD_SECONDS = 60

# Browsers say where a request was started (Fetch Metadata, `Sec-Fetch-Site`). A download
# started by another site -- a sibling subdomain included, which SameSite cookies do not stop
# -- is refused; links on the dashboard itself ("same-origin"), typed or bookmarked URLs
# ("none") and clients that send no such header (curl, old browsers) are served.
REFUSED_FETCH_SITES = frozenset({"cross-site", "same-site"})


def relay(download, release):
    """The agent's chunks, then free the download slot (also when the client goes away)."""
    try:
        yield from download.chunks()
    finally:
        download.close()
        release()


def register(app: bottle.Bottle, ctx) -> None:
    slots = ctx.services.relay_slots

    def audit_download(target: str, result: str) -> None:
        ctx.audit.record(
            user=ctx.session().user, address=ctx.client_address(), action="download", target=target, result=result
        )

    def name_problem(stack, site, file=None):
        if not is_valid_stack_name(stack):
            return "That is not a valid stack name."
        if not is_valid_site_name(site):
            return "That is not a valid site name."
        if file is not None and not is_valid_backup_file_name(file):
            return "That is not a backup file name."
        return None

    @app.get("/backups/<stack>/<site>")
    @ctx.login_required
    def backups_page(stack, site):
        problem = name_problem(stack, site)
        if problem:
            return ctx.fail(400, problem)
        banner, backups = "", []
        try:
            backups = ctx.agent.backups(stack, site)
        except AgentError as exc:
            if exc.status == 404:
                return ctx.fail(404, exc.message or f"There is no site {site} on stack {stack}.")
            banner = exc.message
        if negotiation.wants_json(bottle.request):
            if banner:
                return ctx.json_response({"success": False, "message": banner}, 502)
            return ctx.json_response({"backups": backups})
        now = ctx.now()
        valid = [b for b in backups if isinstance(b, dict)]
        offsite = offsite_section(stack, site, valid, now)
        bottle.response.set_header("Cache-Control", "no-store")
        return ctx.page(
            "backups",
            f"Backups of {site}",
            banner=banner,
            stack=stack,
            site=site,
            qstack=views.url_part(stack),
            qsite=views.url_part(site),
            backups=views.shape_backups(valid, now),
            chart=views.size_chart(valid),
            failed=bool(banner),
            return_to=f"/backups/{views.url_part(stack)}/{views.url_part(site)}",
            offsite=offsite,
        )

    def offsite_section(stack, site, backups, now):
        """The Offsite card: snapshots, a badge (last copy's age, or a warning), the last check; None when off."""
        try:
            snapshots = ctx.agent.offsite(stack, site)
        except AgentError as exc:
            return {"snapshots": [], "badge": "offsite: " + (exc.message or "unavailable"), "warn": True, "check": None}
        if snapshots is None:
            return None
        snaps = [s for s in snapshots if isinstance(s, dict)]
        shaped = views.shape_backups([{**s, "id": s.get("backup"), "verified": True} for s in snaps], now)
        newest = max((str(s.get("backup") or "") for s in snaps), default="")
        lag = sum(1 for b in backups if b.get("verified") and str(b.get("id") or "") > newest)
        try:
            jobs = ctx.agent.jobs(limit=200)
        except AgentError:
            jobs = []
        copy = next((j for j in jobs if j.get("action") == "offsite_copy" and j.get("site") == site), None)
        check = next((j for j in jobs if j.get("action") == "offsite_check"), None)
        failed = copy is not None and copy.get("status") == "failed"
        if failed:
            badge = "offsite: last copy failed"
        elif lag:
            badge = f"offsite: {lag} backup(s) not copied yet"
        elif snaps:
            badge = "offsite: " + views.human_age(max(str(s.get("created") or "") for s in snaps), now)
        else:
            badge = "offsite: no copies yet"
        return {
            "snapshots": shaped,
            "badge": badge,
            "warn": failed or lag > 0 or not snaps,
            "copy_message": copy.get("message") if failed else "",
            "check": None
            if check is None
            else {"status": check.get("status"), "message": check.get("message"), "finished": check.get("finished")},
        }

    @app.get("/download/<stack>/<site>/<file>")
    @ctx.login_required
    def download(stack, site, file):
        problem = name_problem(stack, site, file)
        if problem:
            return ctx.fail(400, problem)
        request = bottle.request
        target = f"{stack}/{site}/{file}"
        fetch_site = (request.get_header("Sec-Fetch-Site") or "").strip().lower()
        if fetch_site in REFUSED_FETCH_SITES:
            audit_download(target, f"refused: started from another site ({fetch_site})")
            return ctx.fail(
                403,
                "Downloads start only from the dashboard's own pages: open the backups page and use its download link.",
            )
        # nginx can only hand out this server's files: another server's are relayed through its link.
        accel = ctx.config["dashboard"]["download_mode"] == "accel" and ctx.is_local_request()
        streaming = not accel and request.method != "HEAD"
        if streaming and not slots.acquire(blocking=False):
            audit_download(target, "refused: too many downloads")
            response = ctx.fail(503, "Too many downloads are running at once; try again in a minute.")
            response.set_header("Retry-After", str(RETRY_DOWNLOAD_SECONDS))
            return response
        handed_over = False
        try:
            response, handed_over = open_download(stack, site, file, target, accel)
            return response
        finally:
            if streaming and not handed_over:
                slots.release()

    def open_download(stack, site, file, target, accel):
        """(answer, True when a relay now owns the download slot and frees it at its end)."""
        request = bottle.request
        # With accel, nginx answers Range itself from the file; the agent only confirms it exists.
        range_header = None if accel else request.get_header("Range")
        try:
            download = ctx.agent.stream_download(
                stack, site, file, range_header, method="HEAD" if accel or request.method == "HEAD" else "GET"
            )
        except AgentError as exc:
            # 503: a fleet server's link has every connection in use (or the agent's relay budget is spent).
            status = exc.status if exc.status in (400, 404, 416, 503) else 502
            audit_download(target, f"failed: {exc.message}")
            return ctx.fail(status, exc.message), False
        result = "ok" if download.status == 200 else f"partial ({range_header})"
        audit_download(target, result)
        headers = dict(download.headers)
        headers.setdefault("Content-Type", "application/octet-stream")
        headers["Content-Disposition"] = f'attachment; filename="{file}"'
        headers["Cache-Control"] = "no-store"
        if accel:
            download.close()
            prefix = ctx.config["dashboard"]["accel_prefix"].rstrip("/")
            # nginx serves the file (Range included) from its internal location.
            headers = {k: v for k, v in headers.items() if k not in ("Content-Length", "Content-Range")}
            headers["X-Accel-Redirect"] = (
                f"{prefix}/{views.url_part(stack)}/{views.url_part(site)}/{views.url_part(file)}"
            )
            return bottle.HTTPResponse(b"", status=200, headers=headers), False
        if request.method == "HEAD":
            download.close()
            return bottle.HTTPResponse(b"", status=download.status, headers=headers), False
        return bottle.HTTPResponse(relay(download, slots.release), status=download.status, headers=headers), True
