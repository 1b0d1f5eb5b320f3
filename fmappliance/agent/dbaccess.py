"""A temporary MariaDB account for one bench step of a restore, created just before and always dropped after.

bench restore, new-site and drop-site connect as a "root" login and run frappe's setup_database
(frappe v15, database/mariadb/setup_db.py): `CREATE USER IF NOT EXISTS` / `ALTER USER` of the
site's own user, `DROP`/`CREATE DATABASE`, `GRANT ALL PRIVILEGES ON db.* TO` that user and
`FLUSH PRIVILEGES`.  So the account gets exactly what those statements need, and no more:

- ``ALL PRIVILEGES ON `<db>`.* WITH GRANT OPTION`` -- on the one database only; the grant option is
  required because bench grants ALL on that database to the site's user.
- ``CREATE USER`` and ``RELOAD`` on ``*.*`` -- MariaDB has no narrower form: `CREATE USER` (which also
  covers `ALTER`/`DROP USER`) is a global privilege only, and `FLUSH PRIVILEGES` needs `RELOAD`.
  Frappe cannot restore without them; the defences are around the account instead:

The account is ``'fma_restore_<random>'@'<address>'`` for each address docker records for the
bench's own container (never ``%``: its password is useless from anywhere else), it exists only
while that one bench command runs, its password reaches bench through the site config
(``root_login``/``root_password``, which frappe's get_root_connection reads; 0600, removed again
right after) and never through an argv, and the database name is validated, never taken on trust
from the container-writable site config.  Root itself only acts inside the db container: the
statements go to ``mariadb -uroot`` on stdin, the root password as ``MYSQL_PWD`` in the environment
(``exec -e MYSQL_PWD`` passes the docker client's own value) -- never in an argv, a log line or job output.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator

from fmappliance.agent.stacks.base import OpsFailed

log = logging.getLogger(__name__)

USER_PREFIX = "fma_restore_"
_DB_NAME = re.compile(r"[A-Za-z0-9_]{1,64}", re.ASCII)
#: MariaDB's own schemas: never a site's database, whatever a site config says.
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})


class DatabaseUnavailable(Exception):
    """The database cannot be reached as root; the text is an operator sentence without secrets."""


def check_db_name(db_name: str, expected: str | None = None) -> str:
    """``db_name`` when the agent may grant on it: the site-name rule's characters, not a system schema, and the
    name recorded outside the container (``expected``, FM's bench_config.toml) when there is one."""
    if not _DB_NAME.fullmatch(db_name or "") or db_name.lower() in SYSTEM_SCHEMAS:
        raise DatabaseUnavailable(f"the site's database name {db_name!r} is not one the agent can grant on")
    if expected is not None and db_name != expected:
        raise DatabaseUnavailable(
            f"the site config names the database {db_name!r}, but the bench was made with {expected!r} "
            "(bench_config.toml); refusing to restore into another database"
        )
    return db_name


def _describe(result) -> str:
    """Why a mariadb command failed, from its last output line (which never holds the root password)."""
    lines = [line.strip() for line in (result.output or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else (result.error or f"exit code {result.exit_code}")


class TemporaryDbUser:
    """``with TemporaryDbUser(ops, run, db_name).granted(site):`` around each bench command that needs root."""

    def __init__(self, ops, run, db_name: str, *, on_log=None):
        self.db_name = check_db_name(db_name)
        self.ops = ops
        self.run = run
        self.on_log = on_log or (lambda text: None)
        self.name = USER_PREFIX + secrets.token_hex(4)
        self.password = secrets.token_hex(20)
        self.root_password: str | None = None
        self.hosts: list[str] = []

    def check_root(self) -> None:
        """Preflight: the root password can be read, the database answers to it, the bench container's
        addresses are known."""
        try:
            self.root_password = self.ops.root_password(self.run)
        except OpsFailed as exc:
            raise DatabaseUnavailable(str(exc)) from None
        self._sql("SELECT 1", "reach the database")
        try:
            self.hosts = self.ops.bench_addresses(self.run)
        except OpsFailed as exc:
            raise DatabaseUnavailable(f"the bench container's address could not be found: {exc}") from None

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

    def _accounts(self) -> list[str]:
        return [f"'{self.name}'@'{host}'" for host in self.hosts]

    @contextlib.contextmanager
    def granted(self, site: str | None, extra: dict | None = None) -> Iterator[None]:
        """The account exists, and bench's config (the site's; ``site`` None: common_site_config.json, for
        new-site) holds its login and password plus ``extra`` keys, only inside this block."""
        if not self.hosts:
            self.check_root()
        statements = []
        for account in self._accounts():
            statements += [
                f"CREATE USER {account} IDENTIFIED BY '{self.password}'",
                f"GRANT ALL PRIVILEGES ON `{self.db_name}`.* TO {account} WITH GRANT OPTION",
                f"GRANT RELOAD, CREATE USER ON *.* TO {account}",
            ]
        try:
            self._sql("; ".join(statements + ["FLUSH PRIVILEGES"]), "create a temporary database user")
        except DatabaseUnavailable:
            self._drop()  # a statement may have got through before the failing one
            raise
        self.on_log(
            f"created the temporary database user {self.name} for {', '.join(self.hosts)} (dropped after this step)"
        )
        before: dict | None = None
        try:
            values = {"root_login": self.name, "root_password": self.password, **(extra or {})}
            try:
                before = self.ops.update_site_config(site, values, self.run)
            except OpsFailed as exc:
                raise DatabaseUnavailable(f"the temporary credentials could not be given to bench: {exc}") from None
            yield
        finally:
            if before is not None:
                try:
                    self.ops.update_site_config(site, before, self.run)
                except OpsFailed as exc:  # e.g. drop-site moved the site away; the account is dropped below
                    log.info("temporary credentials not removed from %s: %s", site or "common_site_config", exc)
            self._drop()

    def _drop(self) -> None:
        accounts = ", ".join(self._accounts())
        try:
            drops = [f"DROP USER IF EXISTS {account}" for account in self._accounts()]
            self._sql("; ".join(drops + ["FLUSH PRIVILEGES"]), "drop the temporary database user")
            self.on_log(f"dropped the temporary database user {self.name}")
        except DatabaseUnavailable as err:
            log.error("temporary database user %s was not dropped: %s", self.name, err)
            self.on_log(
                f"WARNING: the temporary database user {self.name} could not be dropped ({err}); "
                f"drop it by hand: DROP USER {accounts};"
            )
