"""``FmStack``: the StackDriver of a Frappe Manager bench (the restore half is fm_restore.FmSiteOps).

Facts (docs/doubles.md, "Frappe Manager"): a bench is `<FM home>/sites/<bench>`; fm reads
its home from FRAPPE_MANAGER_HOME (0.20+); `-n` turns prompts into errors; status comes from
`docker compose -f <bench>/docker-compose.yml ps --all --format json` on the main services.

Bench commands run the way FM itself runs them, `docker compose -f <bench>/docker-compose.yml exec
--user frappe --workdir /workspace/frappe-bench frappe <argv>`, and never through `fm shell -c`: FM
re-splits that command string with shlex, so every `"` and `\\` in it is lost (`--args '["User"]'`
reaches bench as `--args '[User]'`).  fm stays for start/stop/restart, where its own logic matters.

A bench whose files an older FM wrote needs `fm migrate <bench>`: until then real fm prints "Bench
migration required" and exits 0 having done nothing.  Its output is checked (``_refuse_migration``),
and backups and updates check `bench_config.toml` against `fm --version` before they start.

An update is `bench update` in place: what ran before is recorded (every app's commit, from
``bench version --format json``) so that a failed update can name it; the agent cannot roll the
code back, so the caller restores the databases from their ``pre-update`` backups.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import NamedTuple

import yaml

from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.sources import list_dir_beneath
from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.runner import CommandResult, minimal_env
from fmappliance.agent.stacks import fm_migration
from fmappliance.agent.stacks.base import BackupRun, Find, Resolve, RunningState
from fmappliance.agent.stacks.bench_backup import newest_backup_set, parse_backup_summary
from fmappliance.agent.stacks.compose_output import compute_status, log_options, parse_ps, service_rows
from fmappliance.agent.stacks.fm_restore import FmSiteOps
from fmappliance.wire import is_valid_site_name

#: The bench's workers (short-worker, long-worker, custom ones) live in this compose file of the same project.
WORKERS_FILE = "docker-compose.workers.yml"
MAIN_SERVICES = ("frappe", "nginx", "socketio", "schedule", "redis-cache", "redis-queue")
#: The service bench runs in, and its user.
BENCH_SERVICE = "frappe"
BENCH_USER = "frappe"


class _Tools(NamedTuple):
    """The two commands an fm stack needs: fm for the bench's lifecycle, docker for bench itself."""

    fm: str
    docker: str


def _tools(binary: Resolve) -> _Tools:
    """``binary(config_key)`` gives a resolved path or raises StepFailed naming the missing one."""
    return _Tools(binary("fm_binary"), binary("docker_binary"))


def _bench_label(*bench_args: str) -> str:
    """How a bench step is named in a job's messages (the docker compose prefix says nothing new)."""
    label = " ".join(["bench", *bench_args])
    return label if len(label) <= 120 else label[:117] + "..."


def _version_rows(output: str) -> list[dict] | None:
    """The app rows of `bench version --format json`: frappe prints `json.dumps(data, indent=4)`, an array
    over many lines, and warnings may come first; the last array of objects in the output is taken."""
    decoder = json.JSONDecoder()
    found = None
    for match in re.finditer(r"^[ \t]*\[", output, re.MULTILINE):
        try:
            value, _end = decoder.raw_decode(output, match.end() - 1)
        except ValueError:
            continue
        if isinstance(value, list) and all(isinstance(row, dict) for row in value):
            found = value
    return found


#: The fm command each lifecycle action runs (fm restarts the whole bench; it has no per-site restart).
_FM_LIFECYCLE = {"restart_stack": "restart", "restart_site": "restart", "start_stack": "start", "stop_stack": "stop"}


class FmStack:
    """A Frappe Manager bench (``<FM home>/sites/<bench>``), one site per bench."""

    kind = "fm"
    #: The bench's sites are on the host, read afresh every time.
    sites_in_container = False
    #: The bench dir inside the frappe container (on the host: ``host_bench_dir``).
    CONTAINER_BENCH = "/workspace/frappe-bench"

    def __init__(self, stack: dict):
        self.stack = stack

    # ---- where the bench is, and how fm and bench are run in it
    @property
    def bench_name(self) -> str:
        return os.path.basename(os.path.normpath(self.stack["path"]))

    @property
    def home(self) -> str:
        """The FM home is the bench path's grandparent: <home>/sites/<bench>."""
        return os.path.dirname(os.path.dirname(os.path.normpath(self.stack["path"])))

    def env(self) -> dict:
        env = minimal_env()
        env["FRAPPE_MANAGER_HOME"] = self.home
        return env

    @property
    def host_bench_dir(self) -> str:
        return os.path.join(os.path.normpath(self.stack["path"]), "workspace", "frappe-bench")

    def _compose_file(self, name: str = "docker-compose.yml") -> str:
        return os.path.join(os.path.normpath(self.stack["path"]), name)

    def bench_argv(self, docker: str, *bench_args: str) -> list[str]:
        """`docker compose -f <bench>/docker-compose.yml exec -T --user frappe --workdir /workspace/frappe-bench
        frappe bench ...`: what FM itself runs, as an argv (no shell, nothing re-quoted); -T as stdin is /dev/null."""
        return [
            docker,
            "compose",
            "-f",
            self._compose_file(),
            "exec",
            "-T",
            "--user",
            BENCH_USER,
            "--workdir",
            self.CONTAINER_BENCH,
            BENCH_SERVICE,
            "bench",
            *bench_args,
        ]

    def _fm(self, ctx: JobContext, tools: _Tools, command: str, timeout: float) -> CommandResult:
        """`fm -n <command> <bench>` for restart, start, stop."""
        return ctx.run(
            [tools.fm, "-n", command, self.bench_name],
            timeout=timeout,
            cwd=self.stack["path"],
            env=self.env(),
            inspect=self._refuse_migration(tools),
        )

    def _bench(
        self, ctx: JobContext, tools: _Tools, *args: str, timeout: float, label: str | None = None
    ) -> CommandResult:
        return ctx.run(
            self.bench_argv(tools.docker, *args),
            timeout=timeout,
            cwd=self.stack["path"],
            label=label or _bench_label(*args),
            inspect=self._refuse_migration(tools),
        )

    # ---- "Bench migration required" (fm_migration.py reads the facts)
    def migration_reason(self, fm: str | None) -> str | None:
        """The sentence when the bench needs `fm migrate` (its migrated_to is older than fm), else None."""
        if not fm:
            return None
        return fm_migration.reason(self.bench_name, self.stack["path"], fm, self.home, self.env())

    def _refuse_if_migration_needed(self, tools: _Tools) -> None:
        reason = self.migration_reason(tools.fm)
        if reason:
            raise StepFailed(reason)

    def _refuse_migration(self, tools: _Tools) -> Callable[[CommandResult], None]:
        """An ``inspect`` for ctx.run: fm's "Bench migration required" fails the step, exit code 0 or not."""

        def inspect(result: CommandResult) -> None:
            versions = fm_migration.notice_in(result.output)
            if versions is None:
                return
            old, new = versions
            if old is None or new is None:  # the notice's line was not as expected: read the bench and fm instead
                old = fm_migration.migrated_to(self.stack["path"]) or "?"
                new = fm_migration.fm_version(tools.fm, self.home, self.env()) or "?"
            raise StepFailed(fm_migration.sentence(self.bench_name, old, new))

        return inspect

    # ---- sites
    def list_sites(self, docker_binary: str, timeout: float) -> list[str]:
        """Sites of the bench: `workspace/frappe-bench/sites/*/site_config.json` on the host."""
        sites_dir = os.path.join(self.host_bench_dir, "sites")
        try:
            names = os.listdir(sites_dir)
        except OSError:
            return []
        return sorted(
            n for n in names if is_valid_site_name(n) and os.path.isfile(os.path.join(sites_dir, n, "site_config.json"))
        )

    # ---- status and logs
    def ps_argv(self, docker: str) -> list[str]:
        return [docker, "compose", "-f", self._compose_file(), "ps", "--all", "--format", "json"]

    def services(self, ps_output: str) -> list[dict]:
        return service_rows(parse_ps(ps_output))

    def status_of(self, services: list[dict]) -> tuple[str, str | None]:
        """The bench's status from its main services (a missing one counts as not running)."""
        return compute_status([s for s in services if s["service"] in MAIN_SERVICES], MAIN_SERVICES)

    def declared_services(self) -> list[str]:
        """The worker services of the bench's workers compose file (they may have no container yet)."""
        try:
            with open(self._compose_file(WORKERS_FILE), encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
        except (OSError, yaml.YAMLError):
            return []
        services = data.get("services") if isinstance(data, dict) else None
        return sorted(str(name) for name in services) if isinstance(services, dict) else []

    def logs_argv(self, docker: str, service: str, tail: int, follow: bool) -> list[str]:
        """`docker compose -f docker-compose.yml [-f docker-compose.workers.yml] logs ...`: workers included."""
        argv = [docker, "compose"]
        for name in ("docker-compose.yml", WORKERS_FILE):
            path = self._compose_file(name)
            if name != WORKERS_FILE or os.path.isfile(path):
                argv += ["-f", path]
        return argv + log_options(service, tail, follow)

    # ---- lifecycle
    def run_action(self, ctx: JobContext, binary: Resolve, action: str, site: str | None, timeout: float) -> None:
        """restart/start/stop of the bench, restart/migrate of one site."""
        tools = _tools(binary)
        if action == "migrate_site" and site is not None:
            self._bench(ctx, tools, "--site", site, "migrate", timeout=timeout)
        elif action in _FM_LIFECYCLE:
            self._fm(ctx, tools, _FM_LIFECYCLE[action], timeout)
        else:  # pragma: no cover - every lifecycle action is in the table
            raise StepFailed(f"{action} is not implemented for fm stacks.")

    # ---- backups
    def preflight(self, binary: Resolve) -> None:
        """fm and docker must exist, and the bench must not need `fm migrate` (fm would do nothing)."""
        self._refuse_if_migration_needed(_tools(binary))

    def collect_backup_files(self, run: BackupRun) -> dict[str, str]:
        """Run `bench backup --with-files`; part -> host path of each file (the bench dir is on the host).

        Nothing is copied here: publish reads the files in place, below ``source_root``, and checks
        their sizes against the free space first, so ``run.check_room`` is not needed.
        """
        ctx, site = run.ctx, run.site
        tools = _tools(run.binary)
        self._refuse_if_migration_needed(tools)
        result = self._bench(ctx, tools, "--site", site, "backup", "--with-files", timeout=run.timeout)
        backup_dir = os.path.join(self.host_bench_dir, "sites", site, "private", "backups")
        names = {part: os.path.basename(p) for part, p in parse_backup_summary(result.output, site).items()}
        if "database" not in names:
            ctx.log("no backup summary in bench's output; looking for the newest files in " + backup_dir)
            try:
                entries = list_dir_beneath(self.source_root(run.staging), backup_dir)
            except BackupError as exc:
                raise StepFailed(f"Cannot read the backup dir {backup_dir}: {exc}") from None
            names = newest_backup_set([name for name, st in entries if st.st_mtime >= run.started - 2])
        if "database" not in names:
            raise StepFailed(f"bench reported success but no database dump of {site} was found.")
        return {part: os.path.join(backup_dir, n) for part, n in names.items()}

    def source_root(self, staging: str) -> str:
        """Below the bench dir everything is the container's to write: publish walks it without following links."""
        return self.stack["path"]

    # ---- restores
    def new_site_refusal(self) -> str | None:
        return (
            "An fm stack has one site per bench: create the bench with `fm create <site>` first, "
            "add it to the agent's config, then restore onto it."
        )

    def site_ops(self, find: Find, state_dir: str) -> FmSiteOps:
        return FmSiteOps(self, find("docker_binary"))

    # ---- update and roll-back
    def record_running(self, ctx: JobContext, binary: Resolve, timeout: float) -> RunningState:
        """app -> its commit, from `bench version --format json` in the bench; an app that is not a git
        checkout (commit "") is recorded by its version instead, and the job says so."""
        result = self._bench(
            ctx, _tools(binary), "version", "--format", "json", timeout=timeout, label="bench version --format json"
        )
        commits: dict[str, str] = {}
        without: list[str] = []
        for row in _version_rows(result.output) or []:
            app = str(row.get("app") or "")
            if not app:
                continue
            commit, version = str(row.get("commit") or ""), str(row.get("version") or "")
            if commit:
                commits[app] = commit
            else:
                commits[app] = f"version {version or 'unknown'} (no commit: not a git checkout)"
                without.append(app)
        if not commits:
            raise StepFailed("bench version listed no apps; the update was not started")
        ctx.log("recorded app commits: " + ", ".join(f"{a} {c}" for a, c in sorted(commits.items())))
        if without:
            ctx.log(
                "no commit to name for "
                + ", ".join(sorted(without))
                + " (not a git checkout); recorded by version, the update goes ahead"
            )
        return RunningState(commits=commits)

    def update(self, ctx: JobContext, binary: Resolve, sites: list[str], timeout: float) -> None:
        """`bench update` inside the bench (backups were taken by the caller), then a restart."""
        tools = _tools(binary)
        self._bench(ctx, tools, "update", "--no-backup", timeout=timeout)
        self._fm(ctx, tools, "restart", timeout)

    def health_check(self, ctx: JobContext, binary: Resolve, timeout: float) -> None:
        """Nothing beyond the sites' list-apps: fm restarted the bench, and its own status is checked by fm."""

    def roll_back(
        self, ctx: JobContext, binary: Resolve, name: str, running: RunningState, state_dir: str, timeout: float
    ) -> tuple[list[str], list[str]]:
        """Nothing but the databases can be rolled back: the bench's code was updated in place (the job names
        the commits that ran before)."""
        return [], []
