"""A fake agent implementing the agent HTTP contract with canned data, for dashboard tests.

It runs in-process (waitress in a thread) and records every request, so tests can
assert what the dashboard sent — or that it sent nothing.  Knobs:

- ``fail_status``: answer every authenticated request with this status (401, 500, ...)
- ``fail_paths``: {path prefix: status} for selected paths only
- ``hang``: while set, requests block (until released or ``hang_seconds``) -> client timeouts
- ``job_outcome``: "succeeded" or "failed" for new jobs; jobs advance queued -> running ->
  final on successive GET /jobs/<id>
- ``add_file`` / ``add_synthetic_file``: downloadable backup files (real bytes or a
  generated stream of any size, for benchmarks)
- schedules: ``PUT /schedules`` is checked with the agent's own rules and kept in
  ``schedule_set`` (``schedule_pushes`` counts applied pushes); ``GET /schedules`` shows it
  with ``next_due`` and, per id, ``schedule_results`` (tests set ``last_handled`` etc.);
  ``GET /schedules/history`` lists ``schedule_history`` (``add_schedule_record`` appends)
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time

import bottle
import waitress

from fmappliance import actions_table, wire

TOKEN = "test-token-0123456789abcdef0123456789abcdef"
# The agent's vocabulary comes from the contract itself (fmappliance.wire, fmappliance.actions_table);
# tests/test_agent_contract.py sends the same requests here and to the real agent and compares the shapes.
KNOWN_ACTIONS = actions_table.ACTIONS
SITE_ACTIONS = actions_table.SITE_ACTIONS
_BLOCK = random.Random(7).randbytes(1024 * 1024)


def iso(epoch: float) -> str:
    return wire.format_timestamp(epoch)


def make_stack(
    name: str, sites: list[str], *, status: str = "running", now: float | None = None, kind: str = "compose"
) -> dict:
    now = time.time() if now is None else now
    return {
        "name": name,
        "type": kind,
        "creates_sites": kind == "compose",
        "path": f"/opt/{name}",
        "status": status,
        "reason": None if status != "unknown" else "docker daemon not reachable: connection refused",
        "services": [
            {
                "service": "backend",
                "name": f"{name}-backend-1",
                "state": "running" if status != "stopped" else "exited",
                "health": "",
                "status": "Up 2 hours",
                "exit_code": 0,
                "one_shot": False,
            },
            {
                "service": "db",
                "name": f"{name}-db-1",
                "state": "running" if status == "running" else "exited",
                "health": "healthy",
                "status": "Up 2 hours",
                "exit_code": 0,
                "one_shot": False,
            },
            {
                "service": "configurator",
                "name": f"{name}-configurator-1",
                "state": "exited",
                "health": "",
                "status": "Exited (0) 2 hours ago",
                "exit_code": 0,
                "one_shot": True,
            },
        ],
        "sites": list(sites),
        "last_backups": {
            site: (
                {
                    "id": "2026-11-25_02-00-03",
                    "created": iso(now - 3 * 3600 - i * 30 * 3600),
                    "size": 12_345_678 + i,
                    "verified": True,
                }
                if i % 3 != 2
                else None
            )
            for i, site in enumerate(sites)
        },
        "last_restore_tests": dict.fromkeys(sites),
        "needs_migration": False,
        "checked_at": iso(now),
    }


def many_stacks(stacks: int, sites_per_stack: int) -> list[dict]:
    now = time.time()
    statuses = ("running", "partial", "stopped", "unknown")
    return [
        make_stack(
            f"stack{i:02d}",
            [f"site{j}.stack{i:02d}.example.com" for j in range(sites_per_stack)],
            status=statuses[i % 4],
            now=now,
        )
        for i in range(stacks)
    ]


class FakeAgent:
    def __init__(self, stacks: list[dict] | None = None, token: str = TOKEN):
        self.default_token = token
        self._lock = threading.Lock()
        self.hang = threading.Event()
        self.release = threading.Event()
        self.server = None
        self.thread = None
        self.port = None
        self.reset(stacks)

    def reset(self, stacks: list[dict] | None = None) -> None:
        """Back to the canned state (a running server is kept)."""
        self.token = self.default_token
        self.release.set()
        self.hang.clear()
        self.release.clear()
        self.stacks = (
            stacks
            if stacks is not None
            else [
                make_stack("prod", ["site1.example.com", "site2.example.com"]),
                make_stack("erp", ["erp.example.com"], status="partial", kind="fm"),
            ]
        )
        self.allowed_actions = set(KNOWN_ACTIONS) - {"start_stack", "stop_stack"}
        self.jobs: dict[str, dict] = {}
        self.backups: dict[tuple[str, str], list[dict]] = {}
        self.files: dict[tuple[str, str, str], bytes | int] = {}
        self.requests: list[tuple[str, str, object]] = []
        self.request_ids: list[str] = []
        self.fail_status: int | None = None
        self.fail_paths: dict[str, int] = {}
        self.hang_seconds = 5.0
        self.job_outcome = wire.SUCCEEDED
        self.job_output = "Backing up site...\nDone."
        #: What GET /imports lists: [{"name", "files": [{"name", "size"}], "problems": [...]}].
        self.imports: list[dict] = []
        #: What GET /offsite/{stack}/{site} lists per (stack, site); None: offsite is not configured (404).
        self.offsite: dict[tuple[str, str], list[dict]] | None = None
        self._counter = 0
        #: The applied schedule set ({"version", "received", "catchup_hours", "schedules"}) or None.
        self.schedule_set: dict | None = None
        self.schedule_pushes = 0
        #: schedule id -> fields GET /schedules shows for it (last_handled, lateness_seconds, missed_total).
        self.schedule_results: dict[str, dict] = {}
        self.schedule_history: list[dict] = []

    def add_schedule_record(self, schedule: str, status: str, **fields) -> dict:
        """Append an outcome record as the agent's runner writes it (seq counts from 1)."""
        record = {
            "seq": len(self.schedule_history) + 1,
            "at": iso(time.time()),
            "schedule": schedule,
            "kind": "backup",
            "stack": "prod",
            "site": "site1.example.com",
            "due": iso(time.time()),
            "status": status,
            "job": None,
            "message": "",
            **fields,
        }
        self.schedule_history.append(record)
        return record

    # -- data helpers --------------------------------------------------------------------

    def stack(self, name: str) -> dict | None:
        return next((s for s in self.stacks if s["name"] == name), None)

    def add_job(self, action: str, stack: str, site: str | None, status: str, message: str = "") -> dict:
        """A job as if some other client had started it (the final ones keep their status)."""
        with self._lock:
            self._counter += 1
            job_id = f"{self._counter:016x}"
            final = status in wire.FINISHED
            job = {
                "id": job_id,
                "action": action,
                "stack": stack,
                "site": site,
                "status": status,
                "created": iso(time.time()),
                "started": iso(time.time()) if status != wire.QUEUED else None,
                "finished": iso(time.time()) if final else None,
                "exit_code": (0 if status == wire.SUCCEEDED else 1) if final else None,
                "message": message or status.capitalize() + ".",
                "output": "",
                "result": {},
                "_outcome": status if final else self.job_outcome,
            }
            self.jobs[job_id] = job
            return public(job)

    def finish_job(self, job_id: str, status: str, message: str = "") -> None:
        with self._lock:
            self.jobs[job_id].update(
                status=status,
                finished=iso(time.time()),
                message=message or status.capitalize() + ".",
                exit_code=0 if status == wire.SUCCEEDED else 1,
            )

    def add_backup(
        self, stack: str, site: str, stamp: str, files: dict[str, bytes | int], *, created: str | None = None, **extra
    ) -> dict:
        """A manifest of ``files`` (name -> bytes, or a size for a generated stream)."""
        entries = []
        for name, content in files.items():
            self.files[(stack, site, name)] = content
            size = content if isinstance(content, int) else len(content)
            # Generated files are for size and speed tests: hashing a GiB at setup would cost a second.
            digest = "" if isinstance(content, int) else hashlib.sha256(content).hexdigest()
            part = "database" if name.endswith(".sql.gz") else ("files" if ".files." in name else "other")
            entries.append({"name": name, "part": part, "size": size, "sha256": digest})
        created = created or stamp[:10] + "T" + stamp[11:].replace("-", ":") + "Z"
        manifest = {
            "id": stamp,
            "created": created,
            "stack": stack,
            "site": site,
            "verified": True,
            "size": sum(e["size"] for e in entries),
            "label": wire.MANUAL,
            "encrypted": False,
            "apps": None,
            "files": entries,
            **extra,
        }
        self.backups.setdefault((stack, site), []).append(manifest)
        self.backups[(stack, site)].sort(key=lambda b: b["created"], reverse=True)
        return manifest

    def _publish_backup(self, stack: str, site: str, label: str) -> dict:
        """A backup as a succeeded backup_site job leaves it (called with the lock held)."""
        stamp = time.strftime(wire.BACKUP_ID_FORMAT, time.gmtime())
        files = {f"{stamp}.sql.gz": b"-- dump\n", f"{stamp}.files.tar": b"files"}
        listed = self.add_backup(stack, site, stamp, files, label=label, apps=["frappe"])
        # The job's result is the manifest as written (with its verification notes), not the listing's summary.
        manifest = {k: v for k, v in listed.items() if k != "size"}
        return {**manifest, "verification": "database dump: gzip stream complete; files archive: tar readable"}

    # -- server --------------------------------------------------------------------------

    def start(self, threads: int = 8) -> FakeAgent:
        self.server, self.thread = serve_in_thread(self.wsgi, threads=threads)
        self.port = self.server.effective_port
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            stop_server(self.server, self.thread)
            self.server = None

    # -- WSGI ----------------------------------------------------------------------------

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        body = None
        if method in ("POST", "PUT"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            environ["fake.body"] = body
        with self._lock:
            self.requests.append(
                (method, path + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else ""), body)
            )
            # The dashboard request's id (X-FM-Request), one per request above.
            self.request_ids.append(environ.get("HTTP_X_FM_REQUEST", ""))
        if self.hang.is_set():
            self.release.wait(self.hang_seconds)
        status = None
        if path != "/" and auth != f"Bearer {self.token}":
            status = 401
        elif self.fail_status:
            status = self.fail_status
        else:
            status = next((s for prefix, s in self.fail_paths.items() if path.startswith(prefix)), None)
        if status:
            return _json(start_response, status, {"success": False, "message": f"fake failure {status}"})
        return self._app(environ, start_response)

    @property
    def _app(self):
        if not hasattr(self, "_bottle"):
            self._bottle = self._build()
        return self._bottle

    def _build(self) -> bottle.Bottle:
        app = bottle.Bottle()
        agent = self

        def answer(status, payload):
            return bottle.HTTPResponse(json.dumps(payload), status=status, headers={"Content-Type": "application/json"})

        def error(status, message):
            return answer(status, {"success": False, "message": message})

        @app.get("/")
        def root():
            return answer(200, {"status": "ok", "version": "0.1.0"})

        @app.put("/schedules")
        def put_schedules():
            from datetime import datetime, timezone

            from fmappliance.agent.schedules import PushRejected, parse_push

            data = bottle.request.environ.get("fake.body")
            if isinstance(data, bytes):
                return error(400, "The body is not valid JSON.")
            applied = (agent.schedule_set or {}).get("version")
            version = data.get("version") if isinstance(data, dict) else None
            if isinstance(version, int) and applied is not None and version < applied:
                return error(409, f"schedule version {version} is older than the applied {applied}")
            try:
                push = parse_push(data, now=datetime.now(timezone.utc), default_tz="UTC")
            except PushRejected as exc:
                return answer(exc.status, {"success": False, "message": exc.message, **exc.details})
            if applied == push["version"]:
                return answer(200, {"success": True, "applied_version": applied, "changed": False})
            agent.schedule_set = {**push, "received": iso(time.time())}
            agent.schedule_pushes += 1
            return answer(200, {"success": True, "applied_version": push["version"], "changed": True})

        @app.get("/schedules")
        def get_schedules():
            from datetime import datetime, timezone

            from fmappliance.schedule_calendar import next_due
            from fmappliance.wire import format_timestamp

            current = agent.schedule_set or {"version": None, "received": None, "catchup_hours": 6, "schedules": []}
            now = datetime.now(timezone.utc)
            items = []
            for schedule in current["schedules"]:
                shown = {k: v for k, v in schedule.items() if k != "handled_through"}
                shown.update(
                    next_due=format_timestamp(next_due(schedule, now)) if schedule["enabled"] else None,
                    last_due=None,
                    last_handled=None,
                    lateness_seconds=0,
                    missed_total=0,
                )
                shown.update(agent.schedule_results.get(schedule["id"], {}))
                items.append(shown)
            return answer(200, {**{k: v for k, v in current.items() if k != "schedules"}, "schedules": items})

        @app.get("/schedules/history")
        def schedule_history():
            raw = bottle.request.query.get("after") or "0"
            if not raw.isdigit():
                return error(400, "after must be a whole number (the last seq already seen, 0 for all).")
            runs = [r for r in agent.schedule_history if r["seq"] > int(raw)][:500]
            oldest = agent.schedule_history[0]["seq"] if agent.schedule_history else 1
            return answer(200, {"runs": runs, "oldest": oldest, "next_seq": len(agent.schedule_history) + 1})

        @app.get("/stacks")
        def stacks():
            return answer(
                200,
                {
                    "stacks": agent.stacks,
                    "disk": {"path": "/var/backups/fmappliance", "free_bytes": 40 * 10**9, "total_bytes": 100 * 10**9},
                },
            )

        @app.get("/stacks/<name>")
        def one_stack(name):
            stack = agent.stack(name)
            if stack is None:
                return error(404, f"There is no stack named {name!r} in the agent's config.")
            jobs = [j for j in agent.jobs.values() if j["stack"] == name][-20:][::-1]
            return answer(200, {"stack": stack, "jobs": jobs})

        @app.post("/action")
        def action():
            body = bottle.request.environ.get("fake.body")
            if not isinstance(body, dict):
                return error(400, "Expected a JSON object.")
            problem = actions_table.request_problem(body)  # the real agent's own shape checks
            if problem:
                return error(400, problem)
            name = body["action"]
            spec = actions_table.SPECS[name]
            if name not in agent.allowed_actions:
                return error(403, f"The action {name} is not allowed on this server (security.allowed_actions).")
            if spec.needs_offsite and agent.offsite is None:
                return error(409, "Offsite copies are not configured on this server (no offsite.repository).")
            stack = agent.stack(body.get("stack")) if spec.scope != actions_table.GLOBAL else {"name": "", "sites": []}
            if stack is None:
                return error(404, f"There is no stack named {body.get('stack')!r} in the agent's config.")
            site = body.get("site") if name in SITE_ACTIONS else None
            if name == "restore_site" and body.get("create_site"):
                if not stack["creates_sites"]:
                    return error(400, "An fm bench has one site: create the bench with fm create first.")
            elif name in SITE_ACTIONS and site not in stack["sites"]:
                return error(404, f"Stack {stack['name']!r} has no site named {site!r}.")
            if name == "restore_site" and body.get("source") == "offsite":
                source = (body.get("from_stack") or stack["name"], body.get("from_site") or site)
                if not any(s["backup"] == body.get("backup") for s in (agent.offsite or {}).get(source, [])):
                    return error(404, f"There is no offsite copy of backup {body.get('backup')} of {source[1]}.")
            elif name == "restore_site":
                source = (body.get("from_stack") or stack["name"], body.get("from_site") or site)
                if not any(b["id"] == body.get("backup") for b in agent.backups.get(source, [])):
                    return error(404, f"There is no backup {body.get('backup')!r} of {source[1]} on {source[0]}.")
            if name == "import_backup" and not any(i["name"] == body.get("name") for i in agent.imports):
                return error(404, f"There is no import set {body.get('name')!r}.")
            with agent._lock:
                for job in agent.jobs.values():
                    if (job["action"], job["stack"], job["site"]) == (name, stack["name"], site) and job[
                        "status"
                    ] in wire.UNFINISHED:
                        message = f"The same action is already {job['status']}; showing that job."
                        return answer(202, {"success": True, "message": message, "job": public(job), "duplicate": True})
                agent._counter += 1
                job_id = f"{agent._counter:016x}"
                job = {
                    "id": job_id,
                    "action": name,
                    "stack": stack["name"],
                    "site": site,
                    "status": wire.QUEUED,
                    "created": iso(time.time()),
                    "started": None,
                    "finished": None,
                    "exit_code": None,
                    "message": "Queued.",
                    "output": "",
                    "result": {},
                    "_outcome": agent.job_outcome,
                    "_label": body.get("label") or wire.MANUAL,
                }
                agent.jobs[job_id] = job
            started = spec.started.format(
                stack=stack["name"], site=site, backup=body.get("backup"), name=body.get("name")
            )
            return answer(
                202,
                {
                    "success": True,
                    "message": started,
                    "job": public(job),
                    "duplicate": False,
                },
            )

        @app.get("/jobs/<job_id>")
        def job(job_id):
            with agent._lock:
                job = agent.jobs.get(job_id)
                if job is None:
                    return error(404, "There is no job with that id.")
                if job["status"] == wire.QUEUED:
                    job.update(
                        status=wire.RUNNING,
                        started=iso(time.time()),
                        message="Running.",
                        output=agent.job_output.split("\n")[0],
                    )
                elif job["status"] == wire.RUNNING:
                    ok = job["_outcome"] == wire.SUCCEEDED
                    job.update(
                        status=job["_outcome"],
                        finished=iso(time.time()),
                        exit_code=0 if ok else 1,
                        message="Finished." if ok else "bench backup failed: exit code 1",
                        output=agent.job_output,
                    )
                    if ok and job["action"] == "backup_site":
                        # as the real agent: the new backup is published and is the job's result
                        job["result"] = {"backup": agent._publish_backup(job["stack"], job["site"], job["_label"])}
                return answer(200, public(job))

        @app.get("/jobs")
        def jobs():
            stack = bottle.request.query.get("stack")
            found = [public(j) for j in agent.jobs.values() if not stack or j["stack"] == stack]
            return answer(200, {"jobs": found[::-1][: int(bottle.request.query.get("limit") or 50)]})

        @app.get("/imports")
        def imports():
            return answer(200, {"imports": agent.imports})

        @app.get("/offsite/<stack>/<site>")
        def offsite(stack, site):
            if agent.offsite is None:
                return error(404, "Offsite copies are not configured on this server (no offsite.repository).")
            if agent.stack(stack) is None or site not in agent.stack(stack)["sites"]:
                return error(404, f"Stack {stack!r} has no site named {site!r}.")  # checked before any restic call
            return answer(200, {"snapshots": agent.offsite.get((stack, site), [])})

        @app.get("/backups/<stack>/<site>")
        def backups(stack, site):
            # as the real agent: the stack must be configured, the site only well-formed (a removed
            # site's backups stay listable)
            if agent.stack(stack) is None:
                return error(404, f"There is no stack named {stack!r} in the agent's config.")
            if not wire.is_valid_site_name(site):
                return error(400, "That is not a valid site name.")
            return answer(200, {"backups": agent.backups.get((stack, site), [])})

        @app.route("/backups/<stack>/<site>/<name>", method=["GET", "HEAD"])
        def download(stack, site, name):
            content = agent.files.get((stack, site, name))
            if content is None:
                return error(404, f"No backup file {name!r}.")
            size = content if isinstance(content, int) else len(content)
            start, end, status = 0, size - 1, 200
            header = bottle.request.get_header("Range")
            headers = {
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f'attachment; filename="{name}"',
            }
            if header:
                parsed = parse_range(header, size)
                if parsed is None:
                    return bottle.HTTPResponse("", status=416, headers={"Content-Range": f"bytes */{size}"})
                start, end = parsed
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            headers["Content-Length"] = str(end - start + 1)
            if bottle.request.method == "HEAD":
                return bottle.HTTPResponse("", status=status, headers=headers)
            chunks = (
                synthetic_chunks(start, end + 1) if isinstance(content, int) else iter_bytes(content, start, end + 1)
            )
            return bottle.HTTPResponse(chunks, status=status, headers=headers)

        return app


def public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}


def parse_range(header: str, size: int):
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":
        length = int(last)
        return (max(0, size - length), size - 1) if length else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start <= end and start < size else None


def iter_bytes(content: bytes, start: int, stop: int, chunk: int = 256 * 1024):
    view = memoryview(content)
    for pos in range(start, stop, chunk):
        yield bytes(view[pos : min(pos + chunk, stop)])


def synthetic_chunks(start: int, stop: int):
    """The bytes start..stop of an endless repetition of _BLOCK, without holding them."""
    block, size = memoryview(_BLOCK), len(_BLOCK)
    pos = start
    while pos < stop:
        offset = pos % size
        piece = block[offset : min(size, offset + stop - pos)]
        yield bytes(piece)  # bottle relays bytes only
        pos += len(piece)


def synthetic_content(size: int) -> bytes:
    return b"".join(bytes(c) for c in synthetic_chunks(0, size))


def synthetic_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in synthetic_chunks(0, size):
        digest.update(chunk)
    return digest.hexdigest()


def _json(start_response, status: int, payload: dict):
    data = json.dumps(payload).encode()
    start_response(
        f"{status} {bottle.HTTP_CODES.get(status, 'Error')}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
    )
    return [data]


def serve_in_thread(app, *, threads: int = 8, **options):
    """Start waitress on a free loopback port in a daemon thread; returns (server, thread)."""
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=threads, **options)
    thread = threading.Thread(target=server.run, name="waitress-test", daemon=True)
    thread.start()
    return server, thread


def stop_server(server, thread) -> None:
    """Stop a server from serve_in_thread: close every socket inside its own loop thread."""

    def close_all():
        for channel in list(server._map.values()):
            channel.close()

    server.trigger.pull_trigger(close_all)
    thread.join(timeout=5)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)


def main(argv=None) -> int:
    """Serve a fake agent as its own process (benchmarks, browser tests)."""
    import argparse

    parser = argparse.ArgumentParser(description="fake fmappliance agent")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", default=TOKEN)
    parser.add_argument(
        "--stacks", type=int, default=0, help="generate this many stacks (default: the two canned ones)"
    )
    parser.add_argument("--sites", type=int, default=5, help="sites per generated stack")
    parser.add_argument(
        "--big-file",
        type=int,
        default=0,
        help="size of a generated backup file stack00/<first site>/2026-11-25_02-00-03.files.tar",
    )
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args(argv)
    agent = FakeAgent(many_stacks(args.stacks, args.sites) if args.stacks else None, token=args.token)
    if args.big_file:
        first = agent.stacks[0]
        agent.add_backup(
            first["name"], first["sites"][0], "2026-11-25_02-00-03", {"2026-11-25_02-00-03.files.tar": args.big_file}
        )
    waitress.serve(agent.wsgi, host="127.0.0.1", port=args.port, threads=args.threads, ident="fake-agent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
