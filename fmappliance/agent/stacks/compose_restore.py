"""The compose half of a restore (base.SiteOps): bench in the backend service, MariaDB in the db service,
the parts copied into the container with `docker compose cp`.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import TYPE_CHECKING

from fmappliance.agent.backups.benchstage import apply_changes
from fmappliance.agent.runner import minimal_env
from fmappliance.agent.stacks.base import DROP_ARCHIVE_PREFIX, Command, OpsFailed, Run, StackUnsupported
from fmappliance.agent.stacks.compose_output import container_addresses, root_mariadb

if TYPE_CHECKING:
    from fmappliance.agent.stacks.compose import ComposeStack

#: frappe_docker's db service keeps the root password in its environment, or in a secret file with
#: the secrets override (MYSQL_ROOT_PASSWORD_FILE; docs/doubles.md, "frappe_docker projects"); it is
#: never in common_site_config.
ROOT_PASSWORD_ENV = "MYSQL_ROOT_PASSWORD"
ROOT_PASSWORD_SECRET = "/run/secrets/db_password"


class ComposeSiteOps:
    """Restore steps of a frappe_docker project: bench in the backend service, MariaDB in the db service."""

    def __init__(self, project: ComposeStack, docker: str | None, state_dir: str):
        self.driver = project
        self.stack = project.stack
        if not docker:
            raise StackUnsupported("docker was not found (agent.docker_binary); install it or set its full path.")
        self.docker: str = docker
        self.state_dir = state_dir
        self.service = project.service
        self.db_service = self.stack.get("db_service") or "db"

    def _cmd(self, argv: list[str], env: dict | None = None) -> Command:
        return Command(argv, env, self.stack["path"])

    def bench(self, *args: str) -> Command:
        return self._cmd(self.driver.exec_argv(self.docker, "bench", *args))

    def read_bench_file(self, relpath: str, run: Run) -> str:
        """A text file under the bench dir, read in the backend container (``cat`` prints it)."""
        return run(self._cmd(self.driver.exec_argv(self.docker, "cat", relpath)), quiet=True).output

    def root_password(self, run: Run) -> str:
        base = self.driver.base_argv(self.docker) + ["exec", "-T", self.db_service]
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
        """`mariadb -uroot` in the db service with ``sql`` on stdin (`exec` keeps stdin open by default), the
        password as MYSQL_PWD: never in an argv."""
        compose = self.driver.base_argv(self.docker)
        return root_mariadb(compose, self.db_service, minimal_env(), self.stack["path"], sql, root_password)

    def bench_addresses(self, run: Run) -> list[str]:
        """The backend container's addresses (docker's own record): the only hosts the temporary account accepts."""
        return container_addresses(self.docker, self.stack, self.driver.ps_argv(self.docker), self.service, run)

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
        result = run(self._cmd(self.driver.exec_argv(self.docker, "cat", rel)), quiet=True, check=False, raw=True)
        try:
            doc = json.loads(result.output) if result.ok else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise OpsFailed(f"{rel} in the {self.service} container could not be read as a JSON object")
        before = apply_changes(doc, changes)
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        import tempfile  # only when a site config is written (memory at rest)

        fd, local = tempfile.mkstemp(prefix=".site-config-", dir=self.state_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(doc, handle, indent=1)
            bench = self.driver.CONTAINER_BENCH
            tmp = f"{bench}/{os.path.dirname(rel)}/.{os.path.basename(rel)}.fmappliance-{secrets.token_hex(6)}"
            base = self.driver.base_argv(self.docker)
            steps = [
                base + ["cp", local, f"{self.service}:{tmp}"],
                base + ["exec", "-T", "-u", "root", self.service, "chown", "frappe:frappe", tmp],
                base + ["exec", "-T", self.service, "mv", "-f", tmp, f"{bench}/{rel}"],
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
        return f"{self.driver.CONTAINER_BENCH}/sites/{site}/private/fmappliance-restore-{job_id}"

    def into_bench(self, paths: dict[str, str], site: str, job_id: str, run: Run, stage=None) -> str:
        """Copy the parts (bench name -> host path) into the site's private dir in the container,
        owned by the bench user; returns that dir as the container sees it."""
        target = self._container_dir(site, job_id)
        base = self.driver.base_argv(self.docker)
        run(self._cmd(base + ["exec", "-T", "-u", "root", self.service, "mkdir", "-p", target]))
        for name, path in sorted(paths.items()):
            run(self._cmd(base + ["cp", path, f"{self.service}:{target}/{name}"]))
        run(self._cmd(base + ["exec", "-T", "-u", "root", self.service, "chown", "-R", "frappe:frappe", target]))
        return target

    def cleanup(self, stage, site: str, job_id: str, run: Run) -> None:
        argv = self.driver.base_argv(self.docker) + ["exec", "-T", "-u", "root", self.service, "rm", "-rf"]
        run(self._cmd(argv + [self._container_dir(site, job_id)]), check=False)

    def drop_archive_dir(self, job_id: str) -> str:
        """Where `bench drop-site --archived-sites-path` puts a throwaway site: a dir of the agent's own in the
        sites volume (the move is a rename), removed right after.  bench's default, <bench>/archived/sites, is
        in the container's writable layer and would grow by a copy of the site with every test restore."""
        return f"{self.driver.CONTAINER_BENCH}/sites/{DROP_ARCHIVE_PREFIX}{job_id}"

    def remove_dropped_site(self, site: str, job_id: str, run: Run) -> list[str]:
        """Remove what `bench drop-site` left of the throwaway ``site``: the agent's archive dir, and the site
        in bench's default archives should an older bench have ignored the path.  Returns what was removed."""
        argv = self.driver.base_argv(self.docker) + ["exec", "-T", "-u", "root", self.service, "rm", "-rf"]
        paths = [
            self.drop_archive_dir(job_id),
            f"{self.driver.CONTAINER_BENCH}/archived/sites/{site}",
            f"{self.driver.CONTAINER_BENCH}/archived_sites/{site}",
        ]
        result = run(self._cmd(argv + paths), check=False)
        return [f"{self.service}:{paths[0]}"] if result.ok else []
