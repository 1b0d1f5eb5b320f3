"""``FmStack``: the StackDriver of a Frappe Manager bench (fm.py builds its argv and runs its steps).

fm starts, stops and restarts the bench; bench runs in its frappe container through docker compose,
the way FM itself runs it; the sites are read on the host.
"""

from __future__ import annotations

from fmappliance.agent.jobs import JobContext
from fmappliance.agent.stacks import fm, fm_update
from fmappliance.agent.stacks.base import CheckRoom, Find, Resolve, RunningState
from fmappliance.agent.stacks.compose_output import parse_ps, service_rows


class FmStack:
    """A Frappe Manager bench (``<FM home>/sites/<bench>``), one site per bench."""

    kind = "fm"
    #: The bench's sites are on the host, read afresh every time.
    sites_in_container = False

    def __init__(self, stack: dict):
        self.stack = stack

    # ---- sites
    def list_sites(self, docker_binary: str, timeout: float) -> list[str]:
        return fm.list_sites(self.stack)

    # ---- status and logs
    def ps_argv(self, docker: str) -> list[str]:
        return fm.ps_argv(docker, self.stack)

    def services(self, ps_output: str) -> list[dict]:
        return service_rows(parse_ps(ps_output))

    def status_of(self, services: list[dict]) -> tuple[str, str | None]:
        return fm.status_of(services)

    def migration_reason(self, fm_binary: str | None) -> str | None:
        return fm.migration_reason(self.stack, fm_binary)

    def declared_services(self) -> list[str]:
        return fm.declared_services(self.stack)

    def logs_argv(self, docker: str, service: str, tail: int, follow: bool) -> list[str]:
        return fm.logs_argv(docker, self.stack, service, tail, follow)

    # ---- lifecycle
    def run_action(self, ctx: JobContext, binary: Resolve, action: str, site: str | None, timeout: float) -> None:
        fm.run_action(ctx, fm.tools(binary), action, self.stack, site, timeout)

    # ---- backups
    def preflight(self, binary: Resolve) -> None:
        """fm and docker must exist, and the bench must not need `fm migrate` (fm would do nothing)."""
        fm.preflight(fm.tools(binary), self.stack)

    def collect_backup_files(
        self,
        ctx: JobContext,
        binary: Resolve,
        site: str,
        timeout: float,
        started: float,
        staging: str,
        check_room: CheckRoom | None = None,
    ) -> dict[str, str]:
        return fm.collect_backup_files(ctx, fm.tools(binary), self.stack, site, timeout, started, staging, check_room)

    def source_root(self, staging: str) -> str:
        return fm.source_root(self.stack, staging)

    # ---- restores
    def new_site_refusal(self) -> str | None:
        return fm.SiteOps.new_site_refusal()

    def site_ops(self, find: Find, state_dir: str) -> fm.SiteOps:
        return fm.SiteOps(self.stack, find("docker_binary"), state_dir)

    # ---- update and roll-back
    def record_running(self, ctx: JobContext, binary: Resolve, timeout: float) -> RunningState:
        """Every app's commit (or version, when it is not a git checkout)."""
        return RunningState(commits=fm_update.record_commits(ctx, fm.tools(binary), self.stack, timeout))

    def update(self, ctx: JobContext, binary: Resolve, sites: list[str], timeout: float) -> None:
        fm.update(ctx, fm.tools(binary), self.stack, sites, timeout)

    def health_check(self, ctx: JobContext, binary: Resolve, timeout: float) -> None:
        """Nothing beyond the sites' list-apps: fm restarted the bench, and its own status is checked by fm."""

    def roll_back(
        self, ctx: JobContext, binary: Resolve, name: str, running: RunningState, state_dir: str, timeout: float
    ) -> tuple[list[str], list[str]]:
        """Nothing but the databases can be rolled back: the bench's code was updated in place (the job names
        the commits that ran before)."""
        return [], []
