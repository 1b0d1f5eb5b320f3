"""A temporary MariaDB user for one restore, created before and always dropped after.

bench restore needs root-level rights (DROP/CREATE DATABASE, GRANT to the site's user).  Like
Frappe's own hosting agent, the appliance never hands bench the root password: it creates a user
with a random password, ``ALL`` on the site's database ``WITH GRANT OPTION`` plus ``RELOAD`` and
``CREATE USER``, lets bench use it, and drops it afterwards, also when the restore failed.  The
root password only travels to ``mariadb`` as ``MYSQL_PWD`` in the environment (the stack's
``SiteOps.mariadb`` says how), never in an argv, a log line or job output.
"""

from __future__ import annotations

import logging
import re
import secrets

from fmappliance.agent.stacks import OpsFailed

log = logging.getLogger(__name__)

USER_PREFIX = "fma_restore_"
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)


class DatabaseUnavailable(Exception):
    """The database cannot be reached as root; the text is an operator sentence without secrets."""


def _describe(result) -> str:
    """Why a mariadb command failed, from its last output line (which never holds the root password)."""
    lines = [line.strip() for line in (result.output or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else (result.error or f"exit code {result.exit_code}")


class TemporaryDbUser:
    """``with TemporaryDbUser(ops, run, db_name) as user:`` -> user.name / user.password for bench."""

    def __init__(self, ops, run, db_name: str, *, on_log=None):
        if not _DB_NAME.fullmatch(db_name or ""):
            raise DatabaseUnavailable(f"the site's database name {db_name!r} is not one the agent can grant on")
        self.ops = ops
        self.run = run
        self.db_name = db_name
        self.on_log = on_log or (lambda text: None)
        self.name = USER_PREFIX + secrets.token_hex(4)
        self.password = secrets.token_hex(20)
        self.root_password: str | None = None

    def check_root(self) -> None:
        """Preflight: the root password can be read and the database answers to it."""
        try:
            self.root_password = self.ops.root_password(self.run)
        except OpsFailed as exc:
            raise DatabaseUnavailable(str(exc)) from None
        self._sql("SELECT 1", "reach the database")

    def _sql(self, sql: str, what: str) -> None:
        if self.root_password is None:
            self.check_root()
        try:
            cmd = self.ops.mariadb(sql, self.root_password)
        except OpsFailed as exc:
            raise DatabaseUnavailable(str(exc)) from None
        result = self.run(cmd, quiet=True, check=False, secrets=[self.root_password, self.password])
        if not result.ok:
            raise DatabaseUnavailable(f"could not {what} as the MariaDB root user: {_describe(result)}")

    def __enter__(self) -> TemporaryDbUser:
        user = f"'{self.name}'@'%'"
        self._sql(
            f"CREATE USER {user} IDENTIFIED BY '{self.password}'; "
            f"GRANT ALL PRIVILEGES ON `{self.db_name}`.* TO {user} WITH GRANT OPTION; "
            f"GRANT RELOAD, CREATE USER ON *.* TO {user}; FLUSH PRIVILEGES",
            "create a temporary database user",
        )
        self.on_log(f"created the temporary database user {self.name} (dropped when the restore ends)")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._sql(f"DROP USER IF EXISTS '{self.name}'@'%'; FLUSH PRIVILEGES", "drop the temporary database user")
            self.on_log(f"dropped the temporary database user {self.name}")
        except DatabaseUnavailable as err:
            log.error("temporary database user %s was not dropped: %s", self.name, err)
            self.on_log(
                f"WARNING: the temporary database user {self.name} could not be dropped ({err}); "
                f"drop it by hand: DROP USER '{self.name}'@'%';"
            )
