"""The agent's HTTP API: routes only (the endpoints are described in README.md, "Agent API").

``make_app(config)`` builds a fresh ``bottle.Bottle`` from small groups of routes.  The token is
checked in a before_request hook, i.e. before routing, so unknown paths and wrong methods answer 401
too.  Every error is JSON: a refusal is an :class:`~fmappliance.agent.errors.AgentError` (or one of its
kinds: NameRejected, ActionRejected, LogRequestRejected, PushRejected) raised anywhere below a route
and answered once, by the error plugin, with its status and sentence; an unexpected exception is
logged and answered with a minimal 500.  What an action request may carry comes from
fmappliance/actions_table.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import bottle

from fmappliance.actions_table import request_problem
from fmappliance.agent.actions import Actions
from fmappliance.agent.auth import is_public
from fmappliance.agent.backups import BackupStore
from fmappliance.agent.errors import AgentError
from fmappliance.agent.fleet_gate import ENVIRON_KEY as FLEET_SERVER_KEY
from fmappliance.agent.host import HostFacts
from fmappliance.agent.inventory import Inventory, SitesUnavailable
from fmappliance.agent.jobs import JobManager
from fmappliance.agent.logs import LogStreams, parse_follow, parse_tail
from fmappliance.agent.metrics import AgentMetrics
from fmappliance.agent.proof_records import ProofRecords
from fmappliance.agent.schedules import ScheduleRunner
from fmappliance.agent.status import StatusBoard
from fmappliance.bearer import bearer_token_matches
from fmappliance.config import secrets_of
from fmappliance.prometheus_text import CONTENT_TYPE as METRICS_CONTENT_TYPE
from fmappliance.version import __version__
from fmappliance.wire import ACTION_FIELDS, JOB_ID, is_valid_backup_file_name, is_valid_site_name

if TYPE_CHECKING:  # loaded only where offsite copies are configured (memory at rest)
    from fmappliance.agent.offsite import Offsite, OffsiteTimer

log = logging.getLogger(__name__)

#: An action request is a few short names; anything bigger is not one.
MAX_ACTION_BODY_BYTES = 4096
#: A pushed schedule set: up to 500 entries of about 250 bytes.
MAX_SCHEDULES_BODY_BYTES = 256 * 1024
_GENERIC = {
    400: "The request is not valid.",
    401: "Missing or wrong API token: send 'Authorization: Bearer <token>'.",
    403: "Not allowed.",
    404: "Not found: the agent has no such route or object.",
    405: "That method is not allowed here.",
    409: "Conflict with the current state; try again later.",
    413: "The request body is too large.",
    415: "Send the body as JSON (Content-Type: application/json).",
    500: "Internal error in the agent; see its log.",
}


@dataclass
class AgentServices:
    """Everything the routes use; built once per app (tests pass their own)."""

    inventory: Inventory
    status: StatusBoard
    jobs: JobManager
    store: BackupStore
    actions: Actions
    metrics: AgentMetrics
    host: HostFacts
    logs: LogStreams
    offsite: Offsite | None = None
    offsite_timer: OffsiteTimer | None = None
    schedules: ScheduleRunner | None = None

    def close(self) -> None:
        if self.schedules is not None:
            self.schedules.stop()
        if self.offsite_timer is not None:
            self.offsite_timer.stop()
        self.logs.close()
        self.status.close()
        self.jobs.close()


def build_services(config: dict) -> AgentServices:
    inventory = Inventory(config)
    status = StatusBoard(config, inventory)

    def job_ended(job: dict) -> None:
        status.invalidate(job["stack"])
        metrics.job_ended(job)
        if runner is not None:
            runner.job_ended(job)

    runner: ScheduleRunner | None = None

    # No job can end before the metrics exist: none is submitted until the app serves.
    jobs = JobManager(config["agent"]["state_dir"], redact=secrets_of(config), on_finish=job_ended)
    store = BackupStore(
        config["backups"]["base_path"],
        config["backups"]["retention"],
        keep_safety_days=config["backups"]["keep_safety_days"],
    )
    metrics = AgentMetrics(status=status, store=store, jobs=jobs, proofs=ProofRecords(config["agent"]["state_dir"]))
    offsite = None
    if config.get("offsite", {}).get("enabled"):
        from fmappliance.agent.offsite import Offsite

        offsite = Offsite(config, store, config["agent"]["state_dir"], redact=secrets_of(config))
    actions = Actions(config, inventory, jobs, store, status, offsite=offsite)
    host = HostFacts(config, status=status, store=store)
    logs = LogStreams(config, inventory, status, redact=secrets_of(config))
    timer = None
    if offsite is not None:
        from fmappliance.agent.offsite import OffsiteTimer

        timer = OffsiteTimer(config, actions, store).start()

    def sites_of(stack: str) -> list:
        inventory.check_stack(stack)  # NameRejected (404) when the stack is no longer configured
        return inventory.sites(stack, refresh=True)

    # Scheduled runs take the same path as POST /action, without HTTP. An unreadable
    # schedules.json raises ScheduleFileError here: the agent does not start (__main__).
    runner = ScheduleRunner(
        config["agent"]["state_dir"], start_job=actions.start, list_sites=sites_of, get_job=jobs.get
    )
    metrics.schedules = runner
    runner.start()
    return AgentServices(inventory, status, jobs, store, actions, metrics, host, logs, offsite, timer, runner)


def _json_error(
    status: int, message: str | None = None, headers: dict | None = None, details: dict | None = None
) -> bottle.HTTPResponse:
    body = json.dumps(
        {"success": False, "message": message or _GENERIC.get(status, "Request failed."), **(details or {})}
    )
    res = bottle.HTTPResponse(body, status, headers or {})
    res.content_type = "application/json"
    return res


def make_app(config: dict, *, services: AgentServices | None = None) -> bottle.Bottle:
    """The agent WSGI app for ``config``: the cross-cutting hooks, then each group of routes."""
    services = services or build_services(config)
    app = bottle.Bottle(catchall=True, autojson=True)
    app.agent_services = services
    _install_cross_cutting(app, config["security"]["token"])
    _stack_routes(app, services)
    _schedule_routes(app, services)
    _action_routes(app, services, config)
    _job_routes(app, services)
    _backup_routes(app, services)
    return app


# ---------------------------------------------------------------------- cross-cutting


def _install_cross_cutting(app: bottle.Bottle, token: str) -> None:
    """The token check before routing, JSON error pages, and the one place refusals become answers."""

    @app.hook("before_request")
    def require_token():
        environ = bottle.request.environ
        if is_public(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")):
            return
        if environ.get(FLEET_SERVER_KEY):
            return  # a per-server fleet token, checked by fleet_gate.FleetGate in front of this app
        if not bearer_token_matches(environ.get("HTTP_AUTHORIZATION"), token):
            raise _json_error(401, headers={"WWW-Authenticate": 'Bearer realm="fm-agent"'})

    def json_error_page(err: bottle.HTTPError) -> str:
        status = err.status_code
        message = err.body if isinstance(err.body, str) and err.body and status != 500 else None
        if status == 404 and message and message.startswith("Not found: '"):
            message = None  # bottle's own text echoes the path
        if status == 405:
            allowed = err.headers.get("Allow", "")
            message = f"That method is not allowed here (allowed: {allowed})." if allowed else None
        bottle.response.content_type = "application/json"
        return json.dumps({"success": False, "message": message or _GENERIC.get(status, "Request failed.")})

    app.default_error_handler = json_error_page

    def render_errors(callback):
        # A refusal (AgentError and its kinds) is answered with its status and sentence; anything
        # else unexpected is logged and answered with a bare 500.
        def wrapper(*args, **kwargs):
            try:
                return callback(*args, **kwargs)
            except bottle.HTTPResponse:
                raise
            except AgentError as exc:
                raise _json_error(exc.status, exc.message, exc.headers, exc.details) from None
            except Exception:
                req = bottle.request
                log.exception("unexpected error answering %s %s", req.method, req.path)
                raise bottle.HTTPError(500) from None

        return wrapper

    app.install(render_errors)


def _check_site_shape(site) -> None:
    if not is_valid_site_name(site):
        raise AgentError(400, "That is not a valid site name.")


def _read_json_body(limit: int, shape: str):
    environ = bottle.request.environ
    content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise _json_error(415)
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise AgentError(400, "The request needs a JSON body with a Content-Length.") from None
    if length > limit:
        raise AgentError(413, f"The request body is too large (at most {limit} bytes).")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AgentError(400, f"The body is not valid JSON; send {shape}.") from None


# ---------------------------------------------------------------------- routes


def _stack_routes(app: bottle.Bottle, services: AgentServices) -> None:
    """Health, stacks and their sites and logs, host facts, metrics."""

    @app.get("/")
    def health():
        return {"status": "ok", "version": __version__}

    @app.get("/stacks")
    def list_stacks():
        stacks = [with_backups(s) for s in services.status.all()]
        try:
            disk = services.store.disk_usage()
        except OSError as exc:
            log.warning("cannot read disk usage of the backup dir: %s", exc)
            disk = None
        return {"stacks": stacks, "disk": disk}

    @app.get("/stacks/<name>")
    def show_stack(name):
        services.inventory.check_stack(name)
        stack = with_backups(services.status.one(name))
        return {"stack": stack, "jobs": services.jobs.list(stack=name, limit=20)}

    @app.get("/stacks/<name>/sites")
    def list_sites(name):
        services.inventory.check_stack(name)
        try:
            return {"sites": services.inventory.sites(name)}
        except SitesUnavailable as exc:
            raise AgentError(409, f"The sites of stack {name} cannot be listed right now: {exc}") from None

    @app.get("/stacks/<name>/logs")
    def stack_logs(name):
        services.inventory.check_stack(name)
        query = bottle.request.query
        environ = bottle.request.environ
        # waitress tells whether the client hung up (channel_request_lookahead); elsewhere only a
        # failed write does.
        client_gone = environ.get("waitress.client_disconnected") or (lambda: False)
        tail = parse_tail(query.get("tail"))
        follow = parse_follow(query.get("follow"))
        body = services.logs.open(name, query.get("service"), tail, follow, client_gone)
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
            "X-Content-Type-Options": "nosniff",
        }
        return bottle.HTTPResponse(body, status=200, headers=headers)

    def with_backups(stack: dict) -> dict:
        last = {}
        for site in stack.get("sites") or ():
            manifest = services.store.last_backup(stack["name"], site)
            last[site] = (
                None
                if manifest is None
                else {
                    "id": manifest.get("id"),
                    "created": manifest.get("created"),
                    "size": manifest.get("size", sum(f.get("size", 0) for f in manifest.get("files", []))),
                    "verified": bool(manifest.get("verified")),
                }
            )
        proofs = {site: services.actions.proofs.last(stack["name"], site) for site in stack.get("sites") or ()}
        result = {**stack, "last_backups": last, "last_restore_tests": proofs}
        if services.offsite is not None:
            pairs = {site: services.offsite.last_and_lag(stack["name"], site) for site in stack.get("sites") or ()}
            result["last_offsite"] = {site: pair[0] for site, pair in pairs.items()}
            result["offsite_lag"] = {site: pair[1] for site, pair in pairs.items()}
        return result

    @app.get("/metrics")
    def metrics():
        bottle.response.content_type = METRICS_CONTENT_TYPE
        return services.metrics.render()

    @app.get("/host")
    def host():
        return services.host.snapshot()


def _schedule_routes(app: bottle.Bottle, services: AgentServices) -> None:
    """The schedule set the dashboard pushes, its state and its run history."""

    def runner() -> ScheduleRunner:
        if services.schedules is None:
            raise AgentError(404, "This agent does not run schedules.")
        return services.schedules

    @app.get("/schedules")
    def get_schedules():
        return runner().view()

    @app.get("/schedules/history")
    def schedule_history():
        schedules = runner()
        raw = bottle.request.query.get("after") or "0"
        if not raw.isdigit() or len(raw) > 15:
            raise AgentError(400, "after must be a whole number (the last seq already seen, 0 for all).")
        return schedules.history(int(raw))

    @app.put("/schedules")
    def put_schedules():
        schedules = runner()
        data = _read_json_body(MAX_SCHEDULES_BODY_BYTES, '{"version": N, "catchup_hours": H, "schedules": [...]}')
        applied, changed = schedules.push(data)  # PushRejected names the offending entry in its details
        return {"success": True, "applied_version": applied, "changed": changed}


def _action_routes(app: bottle.Bottle, services: AgentServices, config: dict) -> None:
    """POST /action (every action of fmappliance/actions_table.py) and the import sets it can publish."""

    @app.post("/action")
    def start_action():
        data = _read_json_body(MAX_ACTION_BODY_BYTES, '{"action": ..., "stack": ..., "site": ...}')
        if not isinstance(data, dict):
            raise AgentError(400, 'The body must be a JSON object: {"action": ..., "stack": ..., "site": ...}.')
        problem = request_problem(data)
        if problem:
            raise AgentError(400, problem)
        options = {k: v for k, v in data.items() if k not in ACTION_FIELDS}
        job, created, message = services.actions.start(data["action"], data.get("stack", ""), data.get("site"), options)
        bottle.response.status = 202
        return {"success": True, "message": message, "job": job, "duplicate": not created}

    @app.get("/imports")
    def list_imports():
        from fmappliance.agent.imports import list_imports as scan

        return {"imports": scan(config["backups"]["base_path"])}


def _job_routes(app: bottle.Bottle, services: AgentServices) -> None:
    @app.get("/jobs")
    def list_jobs():
        query = bottle.request.query
        stack = query.get("stack") or None
        if stack is not None:
            services.inventory.check_stack(stack)
        raw_limit = query.get("limit") or "50"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise AgentError(400, "limit must be a whole number from 1 to 500.")
        return {"jobs": services.jobs.list(stack=stack, limit=int(raw_limit))}

    @app.get("/jobs/<job_id>")
    def show_job(job_id):
        job = services.jobs.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise AgentError(404, "There is no job with that id.")
        return job


def _backup_routes(app: bottle.Bottle, services: AgentServices) -> None:
    """Published backups, their offsite copies, and their files for download."""

    @app.get("/backups/<stack>/<site>")
    def list_backups(stack, site):
        services.inventory.check_stack(stack)
        _check_site_shape(site)
        return {"backups": services.store.list_backups(stack, site)}

    @app.get("/offsite/<stack>/<site>")
    def list_offsite(stack, site):
        services.inventory.check_stack(stack)
        _check_site_shape(site)
        if services.offsite is None:
            raise AgentError(404, "Offsite copies are not configured on this server (no offsite.repository).")
        # Made-up site names must cost nothing (issue 21.10): a site of the stack, or one with local backups.
        if site not in services.inventory.sites_for_display(stack) and not services.store.list_backups(stack, site):
            raise AgentError(404, f"Stack {stack!r} has no site named {site!r}.")
        # OffsiteBusy (503 with Retry-After) and OffsiteFailed (502) are AgentErrors: the error plugin answers them.
        return {"snapshots": services.offsite.snapshots_for_page(stack, site)}

    @app.route("/backups/<stack>/<site>/<name>", method=["GET", "HEAD"])
    def download_backup(stack, site, name):
        from fmappliance.agent.downloads import file_response

        services.inventory.check_stack(stack)
        _check_site_shape(site)
        if not is_valid_backup_file_name(name):
            raise AgentError(400, "That is not the name of a published backup file.")
        # BackupNotFound (404) and BadBackupRequest (400) are AgentErrors: the error plugin answers them.
        fileobj, st = services.store.open_published_file(stack, site, name)
        return file_response(
            fileobj,
            st,
            name,
            range_header=bottle.request.environ.get("HTTP_RANGE"),
            method=bottle.request.method,
            if_range=bottle.request.get_header("If-Range"),
        )
