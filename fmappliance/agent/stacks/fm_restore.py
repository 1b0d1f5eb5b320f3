"""The fm half of a restore (base.SiteOps): bench in the bench's frappe container (compose exec, as FM
runs it), MariaDB in FM's global `services` project, the parts staged straight in the bench on the host.

The bench's workspace is bind-mounted into its containers, so everything below it is reached through
directory fds without following links (backups/benchstage.py).
"""

from __future__ import annotations

import os
import shutil
import tomllib
from typing import TYPE_CHECKING

from fmappliance.agent.backups.benchstage import StageDir, read_text_beneath, update_json_beneath
from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.sources import open_dir_beneath
from fmappliance.agent.stacks.base import DROP_ARCHIVE_PREFIX, Command, OpsFailed, Run, StackUnsupported
from fmappliance.agent.stacks.compose_output import container_addresses, root_mariadb

if TYPE_CHECKING:
    from fmappliance.agent.stacks.fm import FmStack

#: FM 0.20 keeps the global-db root password here (24 characters that may include !@%_-+?).
ROOT_PASSWORD_FILE = os.path.join("services", "secrets", "db_root_password.txt")
DB_SERVICE = "global-db"


class FmSiteOps:
    """Restore steps of an FM bench: bench in its frappe container (compose exec, as FM runs it), MariaDB
    in FM's global `services` project."""

    def __init__(self, bench: FmStack, docker: str | None):
        self.driver = bench
        self.stack = bench.stack
        if not docker:
            raise StackUnsupported(
                "docker was not found (agent.docker_binary); an fm bench's bench and database are reached "
                "through it. Install it or set its full path."
            )
        self.docker: str = docker

    def bench(self, *args: str) -> Command:
        return Command(self.driver.bench_argv(self.docker, *args), None, self.stack["path"])

    def read_bench_file(self, relpath: str, run: Run) -> str:
        """A file of the bench on the host, reached without following a link the container planted."""
        parts = ["workspace", "frappe-bench", *relpath.split("/")]
        try:
            return read_text_beneath(self.stack["path"], parts[:-1], parts[-1])
        except BackupError as exc:
            raise OpsFailed(str(exc)) from None

    def root_password(self, run: Run) -> str:
        path = os.path.join(self.driver.home, ROOT_PASSWORD_FILE)
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
        compose = [self.docker, "compose", "-f", os.path.join(self.driver.home, "services", "docker-compose.yml")]
        return root_mariadb(compose, DB_SERVICE, self.driver.env(), self.stack["path"], sql, root_password)

    def bench_addresses(self, run: Run) -> list[str]:
        """The bench's frappe container's addresses (docker's record): the hosts the temporary account accepts."""
        if not self.docker:
            raise OpsFailed("docker was not found (agent.docker_binary); FM's database is reached through it")
        return container_addresses(self.docker, self.stack, self.driver.ps_argv(self.docker), "frappe", run)

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
        return f"{self.driver.CONTAINER_BENCH}/sites/{site}/private/fmappliance-restore-{job_id}"

    def cleanup(self, stage, site: str, job_id: str, run: Run) -> None:
        if stage is not None:
            stage.remove()

    def drop_archive_dir(self, job_id: str) -> str:
        """Where `bench drop-site --archived-sites-path` puts a throwaway site, as the container sees it: a dir
        of the agent's own below sites/ (same bind mount: the move is a rename), removed right after."""
        return f"{self.driver.CONTAINER_BENCH}/sites/{DROP_ARCHIVE_PREFIX}{job_id}"

    def remove_dropped_site(self, site: str, job_id: str, run: Run) -> list[str]:
        """Remove what `bench drop-site` left of the throwaway ``site``: the agent's archive dir, and the site
        in bench's default archives should an older bench have ignored the path.  Returns what was removed."""
        root = self.driver.host_bench_dir
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
