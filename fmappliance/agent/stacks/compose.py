"""docker compose (frappe_docker projects): argv builders, the actions' steps, backups' files, restore steps.

Facts (docs/doubles.md, "frappe_docker projects"): the bench runs in the ``backend`` service (``service:``),
MariaDB in ``db`` (``db_service:``); sites are listed in the container unless the config names them.
The driver the rest of the agent sees is compose_stack.ComposeStack.
"""

from __future__ import annotations

import json
import os
import secrets
import time

from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.runner import minimal_env
from fmappliance.agent.stacks.base import CheckRoom, Command, OpsFailed, Run, StackUnsupported
from fmappliance.agent.stacks.bench_backup import newest_backup_set, parse_backup_summary
from fmappliance.agent.stacks.compose_output import container_addresses, log_options, parse_ps, service_rows
from fmappliance.wire import is_valid_site_name

#: In a frappe_docker stack, the services that serve the bench (restarted by restart_site).
SITE_SERVICES = ("websocket", "queue-short", "queue-long", "scheduler")
#: Where the bench lives inside the backend container.
CONTAINER_BENCH = "/home/frappe/frappe-bench"
#: The dir (below the bench's sites/) that `bench drop-site` archives a throwaway site into; the agent removes it.
DROP_ARCHIVE_PREFIX = ".fmappliance-dropped-"


def base_argv(docker: str, stack: dict) -> list[str]:
    """`docker compose [-p P] [-f F]... --project-directory <path>`."""
    argv = [docker, "compose"]
    if stack.get("project"):
        argv += ["-p", stack["project"]]
    for name in stack.get("files") or ():
        argv += ["-f", os.path.join(stack["path"], name)]
    argv += ["--project-directory", stack["path"]]
    return argv


def ps_argv(docker: str, stack: dict) -> list[str]:
    return base_argv(docker, stack) + ["ps", "--all", "--format", "json"]


def logs_argv(docker: str, stack: dict, service: str, tail: int, follow: bool) -> list[str]:
    """`docker compose ... logs --no-color --timestamps --tail N [--follow] <service>`."""
    return base_argv(docker, stack) + log_options(service, tail, follow)


def declared_services(stack: dict) -> list[str]:
    """Services a stack may have beyond those with containers (compose: none known without compose itself)."""
    return []


def exec_argv(docker: str, stack: dict, *command: str) -> list[str]:
    """Run ``command`` in the bench service without a TTY (stdin is /dev/null anyway)."""
    return base_argv(docker, stack) + ["exec", "-T", stack.get("service") or "backend", *command]


def cp_argv(docker: str, stack: dict, container_path: str, host_path: str) -> list[str]:
    return base_argv(docker, stack) + ["cp", f"{stack.get('service') or 'backend'}:{container_path}", host_path]


def list_sites_argv(docker: str, stack: dict) -> list[str]:
    return exec_argv(docker, stack, "find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json")


def parse_site_list(output: str) -> list[str]:
    """Site names from `find sites -mindepth 2 -maxdepth 2 -name site_config.json` output."""
    sites = set()
    for line in output.splitlines():
        parts = line.strip().split("/")
        if len(parts) == 3 and parts[0] == "sites" and parts[2] == "site_config.json" and is_valid_site_name(parts[1]):
            sites.add(parts[1])
    return sorted(sites)


# ---- actions: each gets the resolved docker binary and runs its steps through the job's context ----


def run_action(ctx: JobContext, docker: str, action: str, stack: dict, site: str | None, timeout: float) -> None:
    """restart/start/stop of the project, restart of the bench's services, migrate of one site."""
    base, cwd = base_argv(docker, stack), stack["path"]
    if action == "restart_stack":
        ctx.run(base + ["restart"], timeout=timeout, cwd=cwd)
    elif action == "start_stack":
        ctx.run(base + ["up", "-d"], timeout=timeout, cwd=cwd)
    elif action == "stop_stack":
        ctx.run(base + ["stop"], timeout=timeout, cwd=cwd)
    elif action == "restart_site":
        ctx.run(base + ["restart", *_site_services(ctx, docker, stack, timeout)], timeout=timeout, cwd=cwd)
    elif action == "migrate_site" and site is not None:
        ctx.run(exec_argv(docker, stack, "bench", "--site", site, "migrate"), timeout=timeout, cwd=cwd)
    else:  # pragma: no cover - every action is dispatched above
        raise StepFailed(f"{action} is not implemented for compose stacks.")


def _site_services(ctx: JobContext, docker: str, stack: dict, timeout: float) -> list[str]:
    """The services that serve the bench and exist in this project."""
    wanted = [stack.get("service") or "backend", *SITE_SERVICES]
    result = ctx.run(ps_argv(docker, stack), timeout=min(timeout, 120), cwd=stack["path"])
    present = {row["service"] for row in service_rows(parse_ps(result.output))}
    services = [s for s in wanted if s in present]
    return services or [wanted[0]]


def update(ctx: JobContext, docker: str, stack: dict, sites: list[str], timeout: float) -> None:
    """Pull new images, recreate the containers, migrate every site (backups were taken by the caller)."""
    base, cwd = base_argv(docker, stack), stack["path"]
    ctx.run(base + ["pull"], timeout=timeout, cwd=cwd, label="docker compose pull")
    ctx.run(base + ["up", "-d"], timeout=timeout, cwd=cwd, label="docker compose up -d")
    for site in sites:
        ctx.run(
            exec_argv(docker, stack, "bench", "--site", site, "migrate"),
            timeout=timeout,
            cwd=cwd,
            label=f"bench --site {site} migrate",
        )


def source_root(stack: dict, staging: str) -> str:
    """The copies out of the container land in the agent's own staging dir."""
    return staging


def collect_backup_files(
    ctx: JobContext,
    docker: str,
    stack: dict,
    site: str,
    timeout: float,
    started: float,
    staging: str,
    check_room: CheckRoom | None = None,
) -> dict[str, str]:
    """Run `bench backup --with-files` in the container; part -> path of each file copied into ``staging``.

    Before copying, the container is asked (stat_argv) that no directory on the way to the files is
    a symlink and how big they are; ``check_room(total, staging)`` refuses what would not fit.
    """
    cwd = stack["path"]
    result = ctx.run(
        exec_argv(docker, stack, "bench", "--site", site, "backup", "--with-files"), timeout=timeout, cwd=cwd
    )
    container_dir = f"{CONTAINER_BENCH}/sites/{site}/private/backups"
    # Only the file names are taken from bench's output; the dir is always the site's backup dir.
    paths = {
        part: f"{container_dir}/{os.path.basename(p)}" for part, p in parse_backup_summary(result.output, site).items()
    }
    if "database" not in paths:
        minutes = int((time.time() - started) // 60) + 2
        ctx.log("no backup summary in bench's output; listing recent files in the container")
        listing = ctx.run(
            exec_argv(
                docker,
                stack,
                "find",
                f"sites/{site}/private/backups",
                "-maxdepth",
                "1",
                "-type",
                "f",
                "-mmin",
                f"-{minutes}",
            ),
            timeout=120,
            cwd=cwd,
        )
        names = [os.path.basename(line.strip()) for line in listing.output.splitlines()]
        paths = {part: f"{container_dir}/{n}" for part, n in newest_backup_set(names).items()}
    if "database" not in paths:
        raise StepFailed(f"bench reported success but no database dump of {site} was found.")
    sizes = _checked_sizes(ctx, docker, stack, site, sorted(paths.values()))
    if check_room is not None:
        check_room(sum(sizes.values()), staging)
    os.makedirs(staging, mode=0o700, exist_ok=True)
    sources = {}
    for part, path in sorted(paths.items()):
        local = os.path.join(staging, os.path.basename(path))
        ctx.run(cp_argv(docker, stack, path, local), timeout=timeout, cwd=cwd)
        copied = os.lstat(local).st_size if os.path.lexists(local) else None
        if copied != sizes[path]:
            raise StepFailed(
                f"{os.path.basename(path)} changed while it was copied out of the container "
                f"({sizes[path]} bytes before, {copied} after); not publishing it."
            )
        sources[part] = local
    return sources


# `stat -c` format: file type, size, name; "|" cannot occur in the names asked about (they are
# validated site names and bench's own backup file names).
_STAT_FORMAT = "%F|%s|%n"


def backup_dir_chain(site: str) -> list[str]:
    """The container directories from the sites volume down to a site's backup dir."""
    sites = f"{CONTAINER_BENCH}/sites"
    return [sites, f"{sites}/{site}", f"{sites}/{site}/private", f"{sites}/{site}/private/backups"]


def _checked_sizes(ctx: JobContext, docker: str, stack: dict, site: str, files: list[str]) -> dict[str, int]:
    """Size of each backup file in the container, after checking that nothing on the way is a symlink.

    `docker compose cp` resolves links inside the container: a `sites/<site>/private/backups` that
    the container replaced with a link to another site's backups would hand over that site's dump.
    GNU stat without -L reports a link as a link, so one call checks every directory and file.
    """
    chain = backup_dir_chain(site)
    result = ctx.run(
        exec_argv(docker, stack, "stat", "-c", _STAT_FORMAT, "--", *chain, *files),
        timeout=120,
        cwd=stack["path"],
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


def _a(kind: str) -> str:
    return "missing" if kind == "missing" else f"a {kind}"


# --------------------------------------------------------------------------------------------
# The compose half of a restore (base.SiteOps)
# --------------------------------------------------------------------------------------------

#: frappe_docker's db service keeps the root password in its environment, or in a secret file with
#: the secrets override (MYSQL_ROOT_PASSWORD_FILE; docs/doubles.md, "frappe_docker projects"); it is
#: never in common_site_config.
ROOT_PASSWORD_ENV = "MYSQL_ROOT_PASSWORD"
ROOT_PASSWORD_SECRET = "/run/secrets/db_password"


class SiteOps:
    """Restore steps of a frappe_docker project: bench in the backend service, MariaDB in the db service."""

    def __init__(self, stack: dict, docker: str | None, state_dir: str):
        self.stack = stack
        if not docker:
            raise StackUnsupported("docker was not found (agent.docker_binary); install it or set its full path.")
        self.docker: str = docker
        self.state_dir = state_dir
        self.service = stack.get("service") or "backend"
        self.db_service = stack.get("db_service") or "db"

    def _cmd(self, argv: list[str], env: dict | None = None) -> Command:
        return Command(argv, env, self.stack["path"])

    def bench(self, *args: str) -> Command:
        return self._cmd(exec_argv(self.docker, self.stack, "bench", *args))

    def read_bench_file(self, relpath: str, run: Run) -> str:
        """A text file under the bench dir, read in the backend container (``cat`` prints it)."""
        return run(self._cmd(exec_argv(self.docker, self.stack, "cat", relpath)), quiet=True).output

    @staticmethod
    def new_site_refusal() -> str | None:
        return None

    def root_password(self, run: Run) -> str:
        base = base_argv(self.docker, self.stack) + ["exec", "-T", self.db_service]
        for argv in (base + ["printenv", ROOT_PASSWORD_ENV], base + ["cat", ROOT_PASSWORD_SECRET]):
            # raw: a job that already knows the password (an update rolling back several sites) would read "***"
            result = run(self._cmd(argv), quiet=True, check=False, raw=True)
            password = result.output.rstrip("\n") if result.ok else ""
            if password and "\n" not in password:
                return password
        raise OpsFailed(
            f"the MariaDB root password could not be read from the {self.db_service} service "
            f"(neither {ROOT_PASSWORD_ENV} nor {ROOT_PASSWORD_SECRET}); is the {self.db_service} service running?"
        )

    def mariadb(self, sql: str, root_password: str) -> Command:
        """`mariadb -uroot` in the db service with ``sql`` on stdin (`exec` keeps stdin open by default); the
        password travels as MYSQL_PWD (`exec -e NAME` passes the docker client's own value): never in an argv."""
        env = {**minimal_env(), "MYSQL_PWD": root_password}
        argv = base_argv(self.docker, self.stack) + [
            "exec",
            "-T",
            "-e",
            "MYSQL_PWD",
            self.db_service,
            "mariadb",
            "-uroot",
        ]
        return Command(argv, env, self.stack["path"], sql.encode())

    def bench_addresses(self, run: Run) -> list[str]:
        """The backend container's addresses (docker's own record): the only hosts the temporary account accepts."""
        return container_addresses(self.docker, self.stack, ps_argv(self.docker, self.stack), self.service, run)

    def expected_db_name(self, site: str) -> str | None:
        """No record outside the container: the project's db service serves only this bench's sites."""
        return None

    def update_site_config(self, site: str | None, changes: dict, run: Run) -> dict:
        """Set (value) or remove (None) keys of a site's site_config.json (``site`` None: common_site_config.json)
        in the container; returns their values before.

        The new file is made 0600 in the agent's state dir, copied in under a temporary name, given to the
        bench user and renamed over the old one: a secret in it never travels in an argv, and bench never
        reads a half-written config."""
        rel = f"sites/{site}/site_config.json" if site else "sites/common_site_config.json"
        # raw: the agent writes this text back, so nothing in it may be masked (it is never shown)
        result = run(self._cmd(exec_argv(self.docker, self.stack, "cat", rel)), quiet=True, check=False, raw=True)
        try:
            doc = json.loads(result.output) if result.ok else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise OpsFailed(f"{rel} in the {self.service} container could not be read as a JSON object")
        before = {key: doc.get(key) for key in changes}
        for key, value in changes.items():
            if value is None:
                doc.pop(key, None)
            else:
                doc[key] = value
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        import tempfile  # only when a site config is written (memory at rest)

        fd, local = tempfile.mkstemp(prefix=".site-config-", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1)
            tmp = (
                f"{CONTAINER_BENCH}/{os.path.dirname(rel)}/.{os.path.basename(rel)}.fmappliance-{secrets.token_hex(6)}"
            )
            base = base_argv(self.docker, self.stack)
            steps = [
                base + ["cp", local, f"{self.service}:{tmp}"],
                base + ["exec", "-T", "-u", "root", self.service, "chown", "frappe:frappe", tmp],
                base + ["exec", "-T", self.service, "mv", "-f", tmp, f"{CONTAINER_BENCH}/{rel}"],
            ]
            for argv in steps:
                if not run(self._cmd(argv), quiet=True, check=False).ok:
                    run(self._cmd(base + ["exec", "-T", "-u", "root", self.service, "rm", "-f", tmp]), check=False)
                    raise OpsFailed(f"{rel} in the {self.service} container could not be updated")
        finally:
            os.unlink(local)
        return before

    def open_stage(self, site: str, job_id: str) -> None:
        """None: the parts are verified where they are published, then copied into the container by
        into_bench (a host copy first would double the I/O of a large restore)."""
        return None

    def _container_dir(self, site: str, job_id: str) -> str:
        return f"{CONTAINER_BENCH}/sites/{site}/private/fmappliance-restore-{job_id}"

    def into_bench(self, paths: dict[str, str], site: str, job_id: str, run: Run, stage=None) -> str:
        """Copy the parts (bench name -> host path) into the site's private dir in the container,
        owned by the bench user; returns that dir as the container sees it."""
        target = self._container_dir(site, job_id)
        base = base_argv(self.docker, self.stack)
        run(self._cmd(base + ["exec", "-T", "-u", "root", self.service, "mkdir", "-p", target]))
        for name, path in sorted(paths.items()):
            run(self._cmd(base + ["cp", path, f"{self.service}:{target}/{name}"]))
        run(self._cmd(base + ["exec", "-T", "-u", "root", self.service, "chown", "-R", "frappe:frappe", target]))
        return target

    def cleanup(self, stage, site: str, job_id: str, run: Run) -> None:
        argv = base_argv(self.docker, self.stack) + ["exec", "-T", "-u", "root", self.service, "rm", "-rf"]
        run(self._cmd(argv + [self._container_dir(site, job_id)]), check=False)

    def drop_archive_dir(self, job_id: str) -> str:
        """Where `bench drop-site --archived-sites-path` puts a throwaway site: a dir of the agent's own in the
        sites volume (the move is a rename), removed right after.  bench's default, <bench>/archived/sites, is
        in the container's writable layer and would grow by a copy of the site with every test restore."""
        return f"{CONTAINER_BENCH}/sites/{DROP_ARCHIVE_PREFIX}{job_id}"

    def remove_dropped_site(self, site: str, job_id: str, run: Run) -> list[str]:
        """Remove what `bench drop-site` left of the throwaway ``site``: the agent's archive dir, and the site
        in bench's default archives should an older bench have ignored the path.  Returns what was removed."""
        argv = base_argv(self.docker, self.stack) + ["exec", "-T", "-u", "root", self.service, "rm", "-rf"]
        paths = [
            self.drop_archive_dir(job_id),
            f"{CONTAINER_BENCH}/archived/sites/{site}",
            f"{CONTAINER_BENCH}/archived_sites/{site}",
        ]
        result = run(self._cmd(argv + paths), check=False)
        return [f"{self.service}:{paths[0]}"] if result.ok else []
