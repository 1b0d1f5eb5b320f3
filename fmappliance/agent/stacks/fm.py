"""Frappe Manager benches: FM home, fm and bench argv builders, the bench's compose file for status.

Facts (docs/doubles.md, "Frappe Manager"): a bench is `<FM home>/sites/<bench>`; fm reads
its home from FRAPPE_MANAGER_HOME (0.20+); `-n` turns prompts into errors; status comes from
`docker compose -f <bench>/docker-compose.yml ps --all --format json` on the main services.

Bench commands run the way FM itself runs them, `docker compose -f <bench>/docker-compose.yml exec
--user frappe --workdir /workspace/frappe-bench frappe <argv>`, and never through `fm shell -c`: FM
re-splits that command string with shlex, so every `"` and `\\` in it is lost (`--args '["User"]'`
reaches bench as `--args '[User]'`).  fm stays for start/stop/restart, where its own logic matters.

A bench whose files an older FM wrote needs `fm migrate <bench>`: until then real fm prints "Bench
migration required" and exits 0 having done nothing.  Its output is checked (``refuse_migration``),
and backups and updates check `bench_config.toml` against `fm --version` before they start.
The driver the rest of the agent sees is fm_stack.FmStack.
"""

from __future__ import annotations

import logging
import os
import shutil
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import yaml

from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.sources import list_dir_beneath, open_dir_beneath
from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.runner import CommandResult, minimal_env
from fmappliance.agent.stacks import fm_migration
from fmappliance.agent.stacks.base import CheckRoom, Command, OpsFailed, Run, StackUnsupported
from fmappliance.agent.stacks.bench_backup import newest_backup_set, parse_backup_summary
from fmappliance.agent.stacks.compose_output import compute_status, container_addresses, log_options
from fmappliance.wire import is_valid_site_name

if TYPE_CHECKING:
    from fmappliance.agent.backups.benchstage import StageDir

log = logging.getLogger(__name__)

#: The bench's workers (short-worker, long-worker, custom ones) live in this compose file of the same project.
WORKERS_FILE = "docker-compose.workers.yml"
MAIN_SERVICES = ("frappe", "nginx", "socketio", "schedule", "redis-cache", "redis-queue")
#: The bench dir inside the frappe container, and where it is on the host.
CONTAINER_BENCH = "/workspace/frappe-bench"
#: The service bench runs in, and its user.
BENCH_SERVICE = "frappe"
#: The dir (below the bench's sites/) that `bench drop-site` archives a throwaway site into; the agent removes it.
DROP_ARCHIVE_PREFIX = ".fmappliance-dropped-"
BENCH_USER = "frappe"


class Tools(NamedTuple):
    """The two commands an fm stack needs: fm for the bench's lifecycle, docker for bench itself."""

    fm: str
    docker: str


def tools(binary: Callable[[str], str]) -> Tools:
    """``binary(config_key)`` gives a resolved path or raises StepFailed naming the missing one."""
    return Tools(binary("fm_binary"), binary("docker_binary"))


def bench_name(stack: dict) -> str:
    return os.path.basename(os.path.normpath(stack["path"]))


def fm_home(stack: dict) -> str:
    """The FM home is the bench path's grandparent: <home>/sites/<bench>."""
    return os.path.dirname(os.path.dirname(os.path.normpath(stack["path"])))


def fm_env(stack: dict) -> dict:
    env = minimal_env()
    env["FRAPPE_MANAGER_HOME"] = fm_home(stack)
    return env


def host_bench_dir(stack: dict) -> str:
    return os.path.join(os.path.normpath(stack["path"]), "workspace", "frappe-bench")


def host_backup_dir(stack: dict, site: str) -> str:
    return os.path.join(host_bench_dir(stack), "sites", site, "private", "backups")


def fm_argv(fm: str, command: str, stack: dict) -> list[str]:
    """`fm -n <command> <bench>` for restart, start, stop."""
    return [fm, "-n", command, bench_name(stack)]


def bench_argv(docker: str, stack: dict, *bench_args: str) -> list[str]:
    """`docker compose -f <bench>/docker-compose.yml exec -T --user frappe --workdir /workspace/frappe-bench
    frappe bench ...`: what FM itself runs, as an argv (no shell, nothing re-quoted); -T as stdin is /dev/null."""
    compose_file = os.path.join(os.path.normpath(stack["path"]), "docker-compose.yml")
    return [
        docker,
        "compose",
        "-f",
        compose_file,
        "exec",
        "-T",
        "--user",
        BENCH_USER,
        "--workdir",
        CONTAINER_BENCH,
        BENCH_SERVICE,
        "bench",
        *bench_args,
    ]


def bench_label(*bench_args: str) -> str:
    """How a bench step is named in a job's messages (the docker compose prefix says nothing new)."""
    label = " ".join(["bench", *bench_args])
    return label if len(label) <= 120 else label[:117] + "..."


# ---- "Bench migration required" (fm_migration.py reads the facts) --------------------------


def migration_reason(stack: dict, fm: str | None) -> str | None:
    """The sentence when the bench needs `fm migrate` (its migrated_to is older than fm), else None."""
    if not fm:
        return None
    return fm_migration.reason(bench_name(stack), stack["path"], fm, fm_home(stack), fm_env(stack))


def preflight(tools: Tools, stack: dict) -> None:
    """Refuse to start a backup or an update of a bench that needs `fm migrate` (fm would do nothing)."""
    reason = migration_reason(stack, tools.fm)
    if reason:
        raise StepFailed(reason)


def refuse_migration(tools: Tools, stack: dict) -> Callable[[CommandResult], None]:
    """An ``inspect`` for ctx.run: fm's "Bench migration required" fails the step, exit code 0 or not."""

    def inspect(result: CommandResult) -> None:
        versions = fm_migration.notice_in(result.output)
        if versions is None:
            return
        old, new = versions
        bench = bench_name(stack)
        if old is None or new is None:  # the notice's line was not as expected: read the bench and fm instead
            old = fm_migration.migrated_to(stack["path"]) or "?"
            new = fm_migration.fm_version(tools.fm, fm_home(stack), fm_env(stack)) or "?"
        raise StepFailed(fm_migration.sentence(bench, old, new))

    return inspect


def ps_argv(docker: str, stack: dict) -> list[str]:
    compose_file = os.path.join(os.path.normpath(stack["path"]), "docker-compose.yml")
    return [docker, "compose", "-f", compose_file, "ps", "--all", "--format", "json"]


def logs_argv(docker: str, stack: dict, service: str, tail: int, follow: bool) -> list[str]:
    """`docker compose -f docker-compose.yml [-f docker-compose.workers.yml] logs ...`: workers included."""
    argv = [docker, "compose"]
    for name in ("docker-compose.yml", WORKERS_FILE):
        path = os.path.join(os.path.normpath(stack["path"]), name)
        if name != WORKERS_FILE or os.path.isfile(path):
            argv += ["-f", path]
    return argv + log_options(service, tail, follow)


def declared_services(stack: dict) -> list[str]:
    """The worker services of the bench's workers compose file (they may have no container yet)."""
    try:
        with open(os.path.join(os.path.normpath(stack["path"]), WORKERS_FILE), encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError):
        return []
    services = data.get("services") if isinstance(data, dict) else None
    return sorted(str(name) for name in services) if isinstance(services, dict) else []


def status_of(services: list[dict]) -> tuple[str, str | None]:
    """The bench's status from its main services (a missing one counts as not running)."""
    return compute_status([s for s in services if s["service"] in MAIN_SERVICES], MAIN_SERVICES)


def list_sites(stack: dict) -> list[str]:
    """Sites of the bench: `workspace/frappe-bench/sites/*/site_config.json` on the host."""

    sites_dir = os.path.join(host_bench_dir(stack), "sites")
    try:
        names = os.listdir(sites_dir)
    except OSError:
        return []
    return sorted(
        n for n in names if is_valid_site_name(n) and os.path.isfile(os.path.join(sites_dir, n, "site_config.json"))
    )


# ---- actions: each gets the resolved fm binary and runs its steps through the job's context ----


def _fm(ctx: JobContext, tools: Tools, command: str, stack: dict, timeout: float):
    return ctx.run(
        fm_argv(tools.fm, command, stack),
        timeout=timeout,
        cwd=stack["path"],
        env=fm_env(stack),
        inspect=refuse_migration(tools, stack),
    )


def _bench(ctx: JobContext, tools: Tools, stack: dict, *args: str, timeout: float, label: str | None = None):
    return ctx.run(
        bench_argv(tools.docker, stack, *args),
        timeout=timeout,
        cwd=stack["path"],
        label=label or bench_label(*args),
        inspect=refuse_migration(tools, stack),
    )


def run_action(ctx: JobContext, tools: Tools, action: str, stack: dict, site: str | None, timeout: float) -> None:
    """restart/start/stop of the bench, restart/migrate of one site."""
    if action in ("restart_stack", "restart_site"):
        _fm(ctx, tools, "restart", stack, timeout)
    elif action == "start_stack":
        _fm(ctx, tools, "start", stack, timeout)
    elif action == "stop_stack":
        _fm(ctx, tools, "stop", stack, timeout)
    elif action == "migrate_site" and site is not None:
        _bench(ctx, tools, stack, "--site", site, "migrate", timeout=timeout)
    else:  # pragma: no cover - every action is dispatched above
        raise StepFailed(f"{action} is not implemented for fm stacks.")


def update(ctx: JobContext, tools: Tools, stack: dict, sites: list[str], timeout: float) -> None:
    """`bench update` inside the bench (backups were taken by the caller), then a restart."""
    _bench(ctx, tools, stack, "update", "--no-backup", timeout=timeout)
    _fm(ctx, tools, "restart", stack, timeout)


def source_root(stack: dict, staging: str) -> str:
    """Below the bench dir everything is the container's to write: publish walks it without following links."""
    return stack["path"]


def collect_backup_files(
    ctx: JobContext,
    tools: Tools,
    stack: dict,
    site: str,
    timeout: float,
    started: float,
    staging: str,
    check_room: CheckRoom | None = None,
) -> dict[str, str]:
    """Run `bench backup --with-files`; part -> host path of each file (the bench dir is on the host).

    Nothing is copied here: publish reads the files in place, below ``source_root``, and checks
    their sizes against the free space first, so ``check_room`` is not needed.
    """
    preflight(tools, stack)
    result = _bench(ctx, tools, stack, "--site", site, "backup", "--with-files", timeout=timeout)
    backup_dir = host_backup_dir(stack, site)
    names = {part: os.path.basename(p) for part, p in parse_backup_summary(result.output, site).items()}
    if "database" not in names:
        ctx.log("no backup summary in bench's output; looking for the newest files in " + backup_dir)
        try:
            entries = list_dir_beneath(source_root(stack, staging), backup_dir)
        except BackupError as exc:
            raise StepFailed(f"Cannot read the backup dir {backup_dir}: {exc}") from None
        names = newest_backup_set([name for name, st in entries if st.st_mtime >= started - 2])
    if "database" not in names:
        raise StepFailed(f"bench reported success but no database dump of {site} was found.")
    return {part: os.path.join(backup_dir, n) for part, n in names.items()}


# --------------------------------------------------------------------------------------------
# The fm half of a restore (base.SiteOps)
# --------------------------------------------------------------------------------------------

#: FM 0.20 keeps the global-db root password here (24 characters that may include !@%_-+?).
ROOT_PASSWORD_FILE = os.path.join("services", "secrets", "db_root_password.txt")
DB_SERVICE = "global-db"


class SiteOps:
    """Restore steps of an FM bench: bench in its frappe container (compose exec, as FM runs it), MariaDB
    in FM's global `services` project."""

    def __init__(self, stack: dict, docker: str | None, state_dir: str):
        self.stack = stack
        if not docker:
            raise StackUnsupported(
                "docker was not found (agent.docker_binary); an fm bench's bench and database are reached "
                "through it. Install it or set its full path."
            )
        self.docker: str = docker

    def bench(self, *args: str) -> Command:
        return Command(bench_argv(self.docker, self.stack, *args), None, self.stack["path"])

    def read_bench_file(self, relpath: str, run: Run) -> str:
        """A file of the bench on the host, reached without following a link the container planted."""
        parts = ["workspace", "frappe-bench", *relpath.split("/")]
        from fmappliance.agent.backups.benchstage import read_text_beneath  # a job's need, not the agent's at rest

        try:
            return read_text_beneath(self.stack["path"], parts[:-1], parts[-1])
        except BackupError as exc:
            raise OpsFailed(str(exc)) from None

    @staticmethod
    def new_site_refusal() -> str | None:
        return (
            "An fm stack has one site per bench: create the bench with `fm create <site>` first, "
            "add it to the agent's config, then restore onto it."
        )

    def root_password(self, run: Run) -> str:
        path = os.path.join(fm_home(self.stack), ROOT_PASSWORD_FILE)
        try:
            with open(path, encoding="utf-8") as handle:
                password = handle.read(4096).strip("\r\n")
        except OSError as exc:
            raise OpsFailed(f"the MariaDB root password could not be read from {path}: {exc.strerror}") from None
        if not password:
            raise OpsFailed(f"{path} is empty; FM's MariaDB root password should be there")
        return password

    def mariadb(self, sql: str, root_password: str) -> Command:
        """`mariadb -uroot` in global-db with ``sql`` on stdin and the password as MYSQL_PWD (never in an argv)."""
        env = {**fm_env(self.stack), "MYSQL_PWD": root_password}
        compose_file = os.path.join(fm_home(self.stack), "services", "docker-compose.yml")
        argv = [
            self.docker,
            "compose",
            "-f",
            compose_file,
            "exec",
            "-T",
            "-e",
            "MYSQL_PWD",
            DB_SERVICE,
            "mariadb",
            "-uroot",
        ]
        return Command(argv, env, self.stack["path"], sql.encode())

    def bench_addresses(self, run: Run) -> list[str]:
        """The bench's frappe container's addresses (docker's record): the hosts the temporary account accepts."""
        if not self.docker:
            raise OpsFailed("docker was not found (agent.docker_binary); FM's database is reached through it")
        return container_addresses(self.docker, self.stack, ps_argv(self.docker, self.stack), "frappe", run)

    def expected_db_name(self, site: str) -> str | None:
        """The db_name FM recorded in <bench>/bench_config.toml (the container cannot write it), if any."""
        try:
            with open(os.path.join(os.path.normpath(self.stack["path"]), "bench_config.toml"), "rb") as handle:
                doc = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError):
            return None
        value = doc.get("db_name")
        return value if isinstance(value, str) and value else None

    def update_site_config(self, site: str | None, changes: dict, run: Run) -> dict:
        """Set (value) or remove (None) keys of a site's site_config.json (``site`` None: common_site_config.json)
        on the host, through dir fds without following links, written 0600 for the bench user
        (benchstage.update_json_beneath); returns the keys' values before."""
        parts = ["workspace", "frappe-bench", "sites"] + ([site] if site else [])
        name = "site_config.json" if site else "common_site_config.json"
        try:
            from fmappliance.agent.backups.benchstage import update_json_beneath

            return update_json_beneath(self.stack["path"], parts, name, changes, self.bench_owner())
        except (BackupError, OSError) as exc:
            raise OpsFailed(f"{name} of {site or 'the bench'} could not be updated: {exc}") from None

    #: Below the bench dir (which the container cannot write) down to a site's private dir.
    def _private_parts(self, site: str) -> list[str]:
        return ["workspace", "frappe-bench", "sites", site, "private"]

    def open_stage(self, site: str, job_id: str) -> StageDir:
        """The staging dir straight in the bench on the host (the frappe container sees it, no second copy),
        made and used only through directory fds: the container can write around it (benchstage.py)."""
        try:
            from fmappliance.agent.backups.benchstage import StageDir

            return StageDir(self.stack["path"], self._private_parts(site), f"fmappliance-restore-{job_id}")
        except BackupError as exc:
            raise OpsFailed(str(exc)) from None

    def bench_owner(self) -> tuple[int, int] | None:
        """uid/gid of the bench dir's owner (the container's frappe user) when the agent runs as root, else None.

        Read from an fd of workspace/frappe-bench reached without following links."""
        if os.geteuid() != 0:
            return None
        fd = open_dir_beneath(self.stack["path"], ["workspace", "frappe-bench"])
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st.st_uid, st.st_gid

    def into_bench(self, paths: dict[str, str], site: str, job_id: str, run: Run, stage=None) -> str:
        """The parts are already in the bench (open_stage); hand them to the bench user with fchown on fds
        and name their dir as the container sees it."""
        if stage is not None:
            try:
                owner = self.bench_owner()
                if owner is not None:
                    stage.hand_over(*owner)
            except (BackupError, OSError) as exc:
                raise OpsFailed(f"the staged parts could not be handed to the bench user: {exc}") from None
        return f"{CONTAINER_BENCH}/sites/{site}/private/fmappliance-restore-{job_id}"

    def cleanup(self, stage, site: str, job_id: str, run: Run) -> None:
        if stage is not None:
            stage.remove()

    def drop_archive_dir(self, job_id: str) -> str:
        """Where `bench drop-site --archived-sites-path` puts a throwaway site, as the container sees it: a dir
        of the agent's own below sites/ (same bind mount: the move is a rename), removed right after."""
        return f"{CONTAINER_BENCH}/sites/{DROP_ARCHIVE_PREFIX}{job_id}"

    def remove_dropped_site(self, site: str, job_id: str, run: Run) -> list[str]:
        """Remove what `bench drop-site` left of the throwaway ``site``: the agent's archive dir, and the site
        in bench's default archives should an older bench have ignored the path.  Returns what was removed."""
        root = host_bench_dir(self.stack)
        removed = []
        for path in (
            os.path.join(root, "sites", DROP_ARCHIVE_PREFIX + job_id),
            os.path.join(root, "archived", "sites", site),
            os.path.join(root, "archived_sites", site),
        ):
            if os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
                if not os.path.lexists(path):
                    removed.append(path)
        return removed
