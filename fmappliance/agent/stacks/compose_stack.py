"""``ComposeStack``: the StackDriver of a frappe_docker project (compose.py builds its argv and runs its steps)."""

from __future__ import annotations

from fmappliance.agent.jobs import JobContext, StepFailed
from fmappliance.agent.runner import redact_text, resolve_binary, run_command
from fmappliance.agent.stacks import compose, compose_update
from fmappliance.agent.stacks.base import CheckRoom, Find, Resolve, RunningState, SitesUnavailable
from fmappliance.agent.stacks.compose_output import compute_status, parse_ps, service_rows

#: The agent.* config key naming the command a compose project's actions run.
DOCKER = "docker_binary"


class ComposeStack:
    """A frappe_docker project: docker compose for everything, bench in its backend service."""

    kind = "compose"

    def __init__(self, stack: dict):
        self.stack = stack
        #: The config's ``sites:`` when given; else they are listed in the bench container.
        self.sites_in_container = not stack.get("sites")

    # ---- sites
    def list_sites(self, docker_binary: str, timeout: float) -> list[str]:
        if not self.sites_in_container:
            return sorted(self.stack["sites"])
        docker = resolve_binary(docker_binary)
        if docker is None:
            raise SitesUnavailable(f"docker ({docker_binary}) was not found; install it or set agent.docker_binary.")
        # The list is parsed, never shown, except its last line when listing failed.
        result = run_command(
            compose.list_sites_argv(docker, self.stack), timeout=timeout, cwd=self.stack["path"], parsed_only=True
        )
        if not result.ok:
            last = redact_text(next((line for line in reversed(result.output.splitlines()) if line.strip()), ""))
            raise SitesUnavailable(
                f"could not list the sites in the {self.stack.get('service') or 'backend'} container: "
                + (result.error or f"exit code {result.exit_code}")
                + (f" ({last.strip()})" if last else "")
            )
        return compose.parse_site_list(result.output)

    # ---- status and logs
    def ps_argv(self, docker: str) -> list[str]:
        return compose.ps_argv(docker, self.stack)

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
        return compose.declared_services(self.stack)

    def logs_argv(self, docker: str, service: str, tail: int, follow: bool) -> list[str]:
        return compose.logs_argv(docker, self.stack, service, tail, follow)

    # ---- lifecycle
    def run_action(self, ctx: JobContext, binary: Resolve, action: str, site: str | None, timeout: float) -> None:
        compose.run_action(ctx, binary(DOCKER), action, self.stack, site, timeout)

    # ---- backups
    def preflight(self, binary: Resolve) -> None:
        """Only docker is needed (named when missing); nothing else to check before a backup or an update."""
        binary(DOCKER)

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
        return compose.collect_backup_files(
            ctx, binary(DOCKER), self.stack, site, timeout, started, staging, check_room
        )

    def source_root(self, staging: str) -> str:
        return compose.source_root(self.stack, staging)

    # ---- restores
    def new_site_refusal(self) -> str | None:
        return compose.SiteOps.new_site_refusal()

    def site_ops(self, find: Find, state_dir: str) -> compose.SiteOps:
        return compose.SiteOps(self.stack, find("docker_binary"), state_dir)

    # ---- update and roll-back
    def record_running(self, ctx: JobContext, binary: Resolve, timeout: float) -> RunningState:
        """The repo digest of every service's image."""
        return RunningState(digests=compose_update.record_digests(ctx, binary(DOCKER), self.stack, timeout))

    def update(self, ctx: JobContext, binary: Resolve, sites: list[str], timeout: float) -> None:
        compose.update(ctx, binary(DOCKER), self.stack, sites, timeout)

    def health_check(self, ctx: JobContext, binary: Resolve, timeout: float) -> None:
        compose_update.health_check(ctx, binary(DOCKER), self.stack, timeout)

    def roll_back(
        self, ctx: JobContext, binary: Resolve, name: str, running: RunningState, state_dir: str, timeout: float
    ) -> tuple[list[str], list[str]]:
        """The previous images, pinned by digest, before the databases are restored."""
        if not running.digests:
            return [], ["the images: none had a repo digest to pin"]
        ctx.log("== rolling back: the previous images, pinned by digest")
        try:
            path = compose_update.pin_digests(
                ctx, binary(DOCKER), name, self.stack, running.digests, state_dir, timeout
            )
        except (StepFailed, OSError) as exc:
            return [], [f"the previous images could not be started: {exc}"]
        return [f"the previous images run again (pinned by digest in {path}; keep it with -f)"], []
