"""``ComposeStack``: the StackDriver of a frappe_docker project (the restore half is
compose_restore.ComposeSiteOps).

Facts (docs/doubles.md, "frappe_docker projects"): the bench runs in the ``backend`` service (``service:``),
MariaDB in ``db`` (``db_service:``); sites are listed in the container unless the config names them.

An update records the repo digest of every service's image first (``compose images`` + ``docker image
inspect``); after pull/up/migrate every long-running service must run.  If a step fails, the project is
pinned back to the recorded digests with a generated compose override (JSON is YAML; the old images were
never pruned) *before* the caller restores the databases from their ``pre-update`` backups.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.runner import CommandResult, redact_text, resolve_binary, run_command
from fmappliance.agent.stacks.base import BackupRun, Find, Resolve, RunningState, SitesUnavailable
from fmappliance.agent.stacks.bench_backup import newest_backup_set, parse_backup_summary
from fmappliance.agent.stacks.compose_output import compute_status, log_options, parse_ps, service_rows
from fmappliance.agent.stacks.compose_restore import ComposeSiteOps
from fmappliance.atomic_file import write_json_atomically
from fmappliance.wire import is_valid_site_name

#: The agent.* config key naming the command a compose project's actions run.
DOCKER = "docker_binary"
#: In a frappe_docker stack, the services that serve the bench (restarted by restart_site).
SITE_SERVICES = ("websocket", "queue-short", "queue-long", "scheduler")
#: The compose files `docker compose` reads by default, in its order (the roll-back override goes on top).
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
# `stat -c` format: file type, size, name; "|" cannot occur in the names asked about (they are
# validated site names and bench's own backup file names).
_STAT_FORMAT = "%F|%s|%n"


def _a(kind: str) -> str:
    return "missing" if kind == "missing" else f"a {kind}"


def _parse_site_list(output: str) -> list[str]:
    """Site names from `find sites -mindepth 2 -maxdepth 2 -name site_config.json` output."""
    sites = set()
    for line in output.splitlines():
        parts = line.strip().split("/")
        if len(parts) == 3 and parts[0] == "sites" and parts[2] == "site_config.json" and is_valid_site_name(parts[1]):
            sites.add(parts[1])
    return sorted(sites)


class ComposeStack:
    """A frappe_docker project: docker compose for everything, bench in its backend service."""

    kind = "compose"
    #: Where the bench lives inside the backend container.
    CONTAINER_BENCH = "/home/frappe/frappe-bench"

    def __init__(self, stack: dict):
        self.stack = stack
        #: The config's ``sites:`` when given; else they are listed in the bench container.
        self.sites_in_container = not stack.get("sites")
        #: The service bench runs in.
        self.service: str = stack.get("service") or "backend"

    # ---- the project's argv
    def base_argv(self, docker: str) -> list[str]:
        """`docker compose [-p P] [-f F]... --project-directory <path>`."""
        argv = [docker, "compose"]
        if self.stack.get("project"):
            argv += ["-p", self.stack["project"]]
        for name in self.stack.get("files") or ():
            argv += ["-f", os.path.join(self.stack["path"], name)]
        argv += ["--project-directory", self.stack["path"]]
        return argv

    def exec_argv(self, docker: str, *command: str) -> list[str]:
        """Run ``command`` in the bench service without a TTY (stdin is /dev/null anyway)."""
        return self.base_argv(docker) + ["exec", "-T", self.service, *command]

    def _run(
        self, ctx: JobContext, argv: list[str], timeout: float, *, check: bool = True, label: str | None = None
    ) -> CommandResult:
        """One step of a job, run in the project dir."""
        return ctx.run(argv, timeout=timeout, cwd=self.stack["path"], check=check, label=label)

    def _rows(self, ctx: JobContext, docker: str, timeout: float) -> list[dict]:
        """The API's per-service rows of the project, as `ps` reports them now."""
        return service_rows(parse_ps(self._run(ctx, self.ps_argv(docker), timeout).output))

    # ---- sites
    def list_sites(self, docker_binary: str, timeout: float) -> list[str]:
        if not self.sites_in_container:
            return sorted(self.stack["sites"])
        docker = resolve_binary(docker_binary)
        if docker is None:
            raise SitesUnavailable(f"docker ({docker_binary}) was not found; install it or set agent.docker_binary.")
        # The list is parsed, never shown, except its last line when listing failed.
        argv = self.exec_argv(docker, "find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json")
        result = run_command(argv, timeout=timeout, cwd=self.stack["path"], parsed_only=True)
        if not result.ok:
            last = redact_text(next((line for line in reversed(result.output.splitlines()) if line.strip()), ""))
            raise SitesUnavailable(
                f"could not list the sites in the {self.service} container: "
                + (result.error or f"exit code {result.exit_code}")
                + (f" ({last.strip()})" if last else "")
            )
        return _parse_site_list(result.output)

    # ---- status and logs
    def ps_argv(self, docker: str) -> list[str]:
        return self.base_argv(docker) + ["ps", "--all", "--format", "json"]

    def services(self, ps_output: str) -> list[dict]:
        return service_rows(parse_ps(ps_output))

    def status_of(self, services: list[dict]) -> tuple[str, str | None]:
        """The project's status from all its services."""
        return compute_status(services)

    def migration_reason(self, fm: str | None) -> str | None:
        """A compose project has no Frappe Manager migration state."""
        return None

    def declared_services(self) -> list[str]:
        """None known beyond those with containers (without compose itself reading the files)."""
        return []

    def logs_argv(self, docker: str, service: str, tail: int, follow: bool) -> list[str]:
        """`docker compose ... logs --no-color --timestamps --tail N [--follow] <service>`."""
        return self.base_argv(docker) + log_options(service, tail, follow)

    # ---- lifecycle
    def run_action(self, ctx: JobContext, binary: Resolve, action: str, site: str | None, timeout: float) -> None:
        """restart/start/stop of the project, restart of the bench's services, migrate of one site."""
        docker = binary(DOCKER)
        base = self.base_argv(docker)
        # Each action's argv, built only for the action asked (restart_site asks docker which services exist).
        argv_of: dict[str, Callable[[], list[str]]] = {
            "restart_stack": lambda: base + ["restart"],
            "start_stack": lambda: base + ["up", "-d"],  # `start` fails once the containers were removed
            "stop_stack": lambda: base + ["stop"],
            "restart_site": lambda: base + ["restart", *self._site_services(ctx, docker, timeout)],
            "migrate_site": lambda: self.exec_argv(docker, "bench", "--site", str(site), "migrate"),
        }
        if action not in argv_of or (action == "migrate_site" and site is None):  # pragma: no cover
            raise StepFailed(f"{action} is not implemented for compose stacks.")
        self._run(ctx, argv_of[action](), timeout)

    def _site_services(self, ctx: JobContext, docker: str, timeout: float) -> list[str]:
        """The services that serve the bench and exist in this project."""
        wanted = [self.service, *SITE_SERVICES]
        present = {row["service"] for row in self._rows(ctx, docker, min(timeout, 120))}
        services = [s for s in wanted if s in present]
        return services or [wanted[0]]

    # ---- backups
    def preflight(self, binary: Resolve) -> None:
        """Only docker is needed (named when missing); nothing else to check before a backup or an update."""
        binary(DOCKER)

    def collect_backup_files(self, run: BackupRun) -> dict[str, str]:
        """Run `bench backup --with-files` in the container; part -> path of each file copied into ``run.staging``.

        Before copying, the container is asked (``_checked_sizes``) that no directory on the way to the files
        is a symlink and how big they are; ``run.check_room(total, staging)`` refuses what would not fit.
        """
        ctx, site, staging = run.ctx, run.site, run.staging
        docker = run.binary(DOCKER)
        result = self._run(ctx, self.exec_argv(docker, "bench", "--site", site, "backup", "--with-files"), run.timeout)
        container_dir = f"{self.CONTAINER_BENCH}/sites/{site}/private/backups"
        # Only the file names are taken from bench's output; the dir is always the site's backup dir.
        paths = {
            part: f"{container_dir}/{os.path.basename(p)}"
            for part, p in parse_backup_summary(result.output, site).items()
        }
        if "database" not in paths:
            minutes = int((time.time() - run.started) // 60) + 2
            ctx.log("no backup summary in bench's output; listing recent files in the container")
            find = ["find", f"sites/{site}/private/backups", "-maxdepth", "1", "-type", "f", "-mmin", f"-{minutes}"]
            listing = self._run(ctx, self.exec_argv(docker, *find), 120)
            names = [os.path.basename(line.strip()) for line in listing.output.splitlines()]
            paths = {part: f"{container_dir}/{n}" for part, n in newest_backup_set(names).items()}
        if "database" not in paths:
            raise StepFailed(f"bench reported success but no database dump of {site} was found.")
        sizes = self._checked_sizes(ctx, docker, site, sorted(paths.values()))
        if run.check_room is not None:
            run.check_room(sum(sizes.values()), staging)
        os.makedirs(staging, mode=0o700, exist_ok=True)
        sources = {}
        for part, path in sorted(paths.items()):
            local = os.path.join(staging, os.path.basename(path))
            self._run(ctx, self.base_argv(docker) + ["cp", f"{self.service}:{path}", local], run.timeout)
            copied = os.lstat(local).st_size if os.path.lexists(local) else None
            if copied != sizes[path]:
                raise StepFailed(
                    f"{os.path.basename(path)} changed while it was copied out of the container "
                    f"({sizes[path]} bytes before, {copied} after); not publishing it."
                )
            sources[part] = local
        return sources

    def _backup_dir_chain(self, site: str) -> list[str]:
        """The container directories from the sites volume down to a site's backup dir."""
        sites = f"{self.CONTAINER_BENCH}/sites"
        return [sites, f"{sites}/{site}", f"{sites}/{site}/private", f"{sites}/{site}/private/backups"]

    def _checked_sizes(self, ctx: JobContext, docker: str, site: str, files: list[str]) -> dict[str, int]:
        """Size of each backup file in the container, after checking that nothing on the way is a symlink.

        `docker compose cp` resolves links inside the container: a `sites/<site>/private/backups` that
        the container replaced with a link to another site's backups would hand over that site's dump.
        GNU stat without -L reports a link as a link, so one call checks every directory and file.
        """
        chain = self._backup_dir_chain(site)
        result = self._run(
            ctx,
            self.exec_argv(docker, "stat", "-c", _STAT_FORMAT, "--", *chain, *files),
            120,
            check=False,
            label="stat of the backup files in the container",
        )
        found: dict[str, tuple[str, int]] = {}
        for line in result.output.splitlines():
            kind, sep, rest = line.partition("|")
            digits, sep2, name = rest.partition("|")
            if sep and sep2 and digits.isdigit():
                found[name] = (kind, int(digits))
        for path in chain:
            kind = found.get(path, ("missing", 0))[0]
            if kind != "directory":
                raise StepFailed(
                    f"In the container, {path} is {_a(kind)}, not a directory; refusing to copy backups through it "
                    f"(a link there could hand over another site's files)."
                )
        sizes: dict[str, int] = {}
        for path in files:
            kind, size = found.get(path, ("missing", 0))
            if kind not in ("regular file", "regular empty file"):
                raise StepFailed(f"In the container, {path} is {_a(kind)}, not a regular file; not publishing it.")
            sizes[path] = size
        return sizes

    def source_root(self, staging: str) -> str:
        """The copies out of the container land in the agent's own staging dir."""
        return staging

    # ---- restores
    def new_site_refusal(self) -> str | None:
        """None: a restore may create a new site in the project."""
        return None

    def site_ops(self, find: Find, state_dir: str) -> ComposeSiteOps:
        return ComposeSiteOps(self, find(DOCKER), state_dir)

    # ---- update and roll-back
    def record_running(self, ctx: JobContext, binary: Resolve, timeout: float) -> RunningState:
        """service -> repo digest (``repo@sha256:...``) of the image it runs now."""
        docker = binary(DOCKER)
        service_of = {row["name"]: row["service"] for row in self._rows(ctx, docker, timeout)}
        images = parse_ps(self._run(ctx, self.base_argv(docker) + ["images", "--format", "json"], timeout).output)
        digests: dict[str, str] = {}
        for row in images:
            service = service_of.get(str(row.get("ContainerName") or ""))
            image_id, repo = str(row.get("ID") or ""), str(row.get("Repository") or "")
            if not service or not image_id:
                continue
            inspect = [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", image_id]
            found = []
            for line in self._run(ctx, inspect, timeout).output.splitlines():
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, list):
                    found += [str(v) for v in value]
            mine = [d for d in found if d.split("@", 1)[0] == repo] or found
            if not mine:
                # A locally built image was never pulled or pushed: `pull` cannot replace it either.
                ctx.log(
                    f"{service} runs a locally built image ({image_id[:19]}) without a repo digest; it is not pinned"
                )
                continue
            digests[service] = mine[0]
        if not digests:
            ctx.log("WARNING: no service image has a repo digest; a failed update restores the databases only")
        ctx.log("recorded image digests: " + ", ".join(f"{s}={d}" for s, d in sorted(digests.items())))
        return RunningState(digests=digests)

    def update(self, ctx: JobContext, binary: Resolve, sites: list[str], timeout: float) -> None:
        """Pull new images, recreate the containers, migrate every site (backups were taken by the caller)."""
        docker = binary(DOCKER)
        base = self.base_argv(docker)
        self._run(ctx, base + ["pull"], timeout, label="docker compose pull")
        self._run(ctx, base + ["up", "-d"], timeout, label="docker compose up -d")
        for site in sites:
            argv = self.exec_argv(docker, "bench", "--site", site, "migrate")
            self._run(ctx, argv, timeout, label=f"bench --site {site} migrate")

    def health_check(self, ctx: JobContext, binary: Resolve, timeout: float) -> None:
        """Every long-running service runs after the update."""
        rows = self._rows(ctx, binary(DOCKER), timeout)
        down = [r["service"] for r in rows if not r["one_shot"] and r["state"] != "running"]
        if down:
            raise StepFailed(f"health check: {', '.join(sorted(down))} not running after the update")

    def roll_back(
        self, ctx: JobContext, binary: Resolve, name: str, running: RunningState, state_dir: str, timeout: float
    ) -> tuple[list[str], list[str]]:
        """The previous images, pinned by digest, before the databases are restored."""
        if not running.digests:
            return [], ["the images: none had a repo digest to pin"]
        ctx.log("== rolling back: the previous images, pinned by digest")
        try:
            path = self._pin_digests(ctx, binary(DOCKER), name, running.digests, state_dir, timeout)
        except (StepFailed, OSError) as exc:
            return [], [f"the previous images could not be started: {exc}"]
        return [f"the previous images run again (pinned by digest in {path}; keep it with -f)"], []

    def _compose_files(self) -> list[str]:
        files = [os.path.join(self.stack["path"], f) for f in self.stack.get("files") or ()]
        if files:
            return files
        for name in COMPOSE_FILES:
            path = os.path.join(self.stack["path"], name)
            if os.path.isfile(path):
                return [path]
        raise StepFailed(f"no compose file found in {self.stack['path']} to pin the old images against")

    def _pin_digests(
        self, ctx: JobContext, docker: str, name: str, digests: dict[str, str], state_dir: str, timeout: float
    ) -> str:
        """Write an override pinning every service to its recorded digest and `up -d` with it; returns its path."""
        directory = os.path.join(state_dir, "rollback")
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, f"{name}-pinned.json")
        doc = {"services": {s: {"image": d, "pull_policy": "missing"} for s, d in sorted(digests.items())}}
        write_json_atomically(path, doc, 0o600, indent=1)
        argv = [docker, "compose"]
        if self.stack.get("project"):
            argv += ["-p", self.stack["project"]]
        for file in self._compose_files():
            argv += ["-f", file]
        argv += ["-f", path, "--project-directory", self.stack["path"], "up", "-d"]
        self._run(ctx, argv, timeout, label="docker compose up -d (old images pinned)")
        return path
