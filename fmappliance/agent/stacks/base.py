"""What a stack type offers the rest of the agent: the ``StackDriver`` and ``SiteOps`` protocols and the
types they share.

A driver is made for one stack (its config section) by ``stacks.for_stack``; everything that
depends on the stack's type -- how its status is asked and read, how it is started and stopped,
how bench runs in it, where a backup's files come from, how an update is recorded, made and rolled
back, where a restore stages its parts -- is a method here, so no caller outside stacks/ ever
branches on the type.  Methods that run commands get the job's context (only runner.py starts
processes) and ``binary``, which resolves an ``agent.*_binary`` config key or raises StepFailed
naming the missing command (each type knows which commands it needs).

Besides jobs.py (which imports nothing of stacks/) this module imports nothing of the agent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from fmappliance.agent.jobs import JobContext

#: ``agent.*`` config key ("docker_binary", "fm_binary") -> the command's full path; raises StepFailed when missing.
Resolve = Callable[[str], str]
#: ``agent.*`` config key -> the command's full path, or None when it is not installed.
Find = Callable[[str], str | None]
#: restore.py's runner of a Command for SiteOps: ``run(cmd, quiet=, check=, raw=)`` -> a runner.CommandResult.
Run = Callable[..., Any]
#: ``check_room(bytes, staging)`` refuses a copy out of a container that would not fit.
CheckRoom = Callable[[int, str], None]
#: The dir (below the bench's sites/) that `bench drop-site` archives a test restore's throwaway site into;
#: the agent removes it right after.
DROP_ARCHIVE_PREFIX = ".fmappliance-dropped-"


class Command(NamedTuple):
    """One command to run: its argv, complete environment (None: the runner's minimal one), cwd, and what
    its stdin gets (None: /dev/null) -- the way SQL that names a password reaches mariadb."""

    argv: list[str]
    env: dict | None
    cwd: str
    input: bytes | None = None


class StackUnsupported(Exception):
    """This stack type cannot do what was asked; an operator message."""


class SitesUnavailable(Exception):
    """The site list of a stack could not be read (container down, docker error); an operator message."""


class OpsFailed(Exception):
    """A stack-specific step could not be done; the text is an operator message without secrets."""


@dataclass
class RunningState:
    """What ran before an update, so that a failed one can be rolled back: the repo digest of every
    service's image (compose) or every app's commit (fm: its code is updated in place and is not
    rolled back by the agent, so the job names the commits)."""

    digests: dict[str, str] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupRun:
    """One `bench backup --with-files` of a site inside a job: what ``collect_backup_files`` needs.

    ``started`` (time.time() before bench ran) tells this backup's files from older ones when bench
    printed no summary; a stack that copies the files out of a container puts them in ``staging``
    (the agent's own dir) after ``check_room(bytes, staging)`` agreed they fit."""

    ctx: JobContext
    binary: Resolve
    site: str
    timeout: float
    started: float
    staging: str
    check_room: CheckRoom | None = None


class SiteOps(Protocol):
    """The stack-specific half of a restore: how bench is run, where the parts go so bench can read them,
    where the MariaDB root password lives and how to reach the database as root, the bench container's
    addresses, how a site config is changed without an argv.  restore.py and dbaccess.py use only this."""

    def bench(self, *args: str) -> Command: ...

    def read_bench_file(self, relpath: str, run: Run) -> str: ...

    def root_password(self, run: Run) -> str: ...

    def mariadb(self, sql: str, root_password: str) -> Command: ...

    def bench_addresses(self, run: Run) -> list[str]: ...

    def expected_db_name(self, site: str) -> str | None: ...

    def update_site_config(self, site: str | None, changes: dict, run: Run) -> dict: ...

    def open_stage(self, site: str, job_id: str) -> Any: ...

    def into_bench(self, paths: dict[str, str], site: str, job_id: str, run: Run, stage: Any = None) -> str: ...

    def cleanup(self, stage: Any, site: str, job_id: str, run: Run) -> None: ...

    def drop_archive_dir(self, job_id: str) -> str: ...

    def remove_dropped_site(self, site: str, job_id: str, run: Run) -> list[str]: ...


class StackDriver(Protocol):
    """One stack, as its type drives it (``fm.FmStack``, ``compose.ComposeStack``)."""

    #: The stack's "type" as the config and the API name it.
    kind: str
    stack: dict

    #: Whether ``list_sites`` asks a container (slow and may fail: the inventory caches its answer).
    sites_in_container: bool

    # ---- sites
    def list_sites(self, docker_binary: str, timeout: float) -> list[str]:
        """The stack's sites (``docker_binary``: agent.docker_binary); SitesUnavailable when they cannot be told."""
        ...

    # ---- status and logs
    def ps_argv(self, docker: str) -> list[str]: ...

    def services(self, ps_output: str) -> list[dict]:
        """The API's per-service rows from ``ps_argv``'s output."""
        ...

    def status_of(self, services: list[dict]) -> tuple[str, str | None]:
        """running / partial / stopped, and why when not running."""
        ...

    def migration_reason(self, fm: str | None) -> str | None:
        """The sentence when the stack needs `fm migrate` before anything works, else None."""
        ...

    def declared_services(self) -> list[str]:
        """Services the stack may have beyond those with containers."""
        ...

    def logs_argv(self, docker: str, service: str, tail: int, follow: bool) -> list[str]: ...

    # ---- lifecycle
    def run_action(self, ctx: JobContext, binary: Resolve, action: str, site: str | None, timeout: float) -> None:
        """restart_stack, start_stack, stop_stack, restart_site, migrate_site."""
        ...

    # ---- backups
    def preflight(self, binary: Resolve) -> None:
        """Refuse (StepFailed) to start a backup or an update that cannot work."""
        ...

    def collect_backup_files(self, run: BackupRun) -> dict[str, str]:
        """Run `bench backup --with-files`; part -> path of each file, below ``source_root``."""
        ...

    def source_root(self, staging: str) -> str:
        """The dir below which publish reads the backup's files without following links."""
        ...

    # ---- restores
    def new_site_refusal(self) -> str | None:
        """Why a restore may not create a new site on this stack type, or None."""
        ...

    def site_ops(self, find: Find, state_dir: str) -> SiteOps:
        """The restore steps (StackUnsupported when a command they need is missing)."""
        ...

    # ---- update and roll-back
    def record_running(self, ctx: JobContext, binary: Resolve, timeout: float) -> RunningState: ...

    def update(self, ctx: JobContext, binary: Resolve, sites: list[str], timeout: float) -> None: ...

    def health_check(self, ctx: JobContext, binary: Resolve, timeout: float) -> None:
        """What the type itself checks after an update (every site's list-apps is checked by the caller)."""
        ...

    def roll_back(
        self, ctx: JobContext, binary: Resolve, name: str, running: RunningState, state_dir: str, timeout: float
    ) -> tuple[list[str], list[str]]:
        """Undo what an update changed besides the databases, before they are restored: (done, not done)."""
        ...
