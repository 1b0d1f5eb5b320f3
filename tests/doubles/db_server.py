"""The MariaDB server the doubles' benches use: a compose project's `db` service or FM's `global-db`.

A database is a text file of SQL (``dbservers/<project>/databases/<db>.sql``), so a test can tell
which dump a site was restored from; accounts other than root live in ``users.json`` keyed
``user@host`` (MariaDB's account is user *and* host: a connection matches `user`@`<its address>`, then `%`).
The root password is the service's ``MYSQL_ROOT_PASSWORD`` (``env`` in the project's state), as
frappe_docker and FM configure it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ROOT_PASSWORD_ENV = "MYSQL_ROOT_PASSWORD"
ACCESS_DENIED = "ERROR 1045 (28000): Access denied for user '{user}'@'172.18.0.5' (using password: {using})"
CANNOT_CONNECT = "ERROR 2002 (HY000): Can't connect to server on '{host}' (115)"

_APPS_ROW = re.compile(r"^INSERT INTO `tabInstalled Application` VALUES (.*);$", re.MULTILINE)
_QUOTED = re.compile(r"'([^']*)'")


def site_content(site: str, apps=("frappe", "erpnext"), notes: int = 200, tag: str = "original") -> str:
    """What a freshly made site's database holds: frappe's core tables, its apps, some notes."""
    rows = "".join(f"INSERT INTO `tabNote` VALUES ('{tag} note {i} of {site}');\n" for i in range(notes))
    return (
        "CREATE TABLE `__Auth` (`doctype` varchar(140), `name` varchar(255), `password` text);\n"
        "INSERT INTO `__Auth` VALUES ('User','Administrator','$pbkdf2-sha256$29000$x');\n"
        "CREATE TABLE `tabDefaultValue` (`name` varchar(140));\n"
        "CREATE TABLE `tabUser` (`name` varchar(140));\n"
        "INSERT INTO `tabUser` VALUES ('Administrator'),('Guest');\n"
        "CREATE TABLE `tabInstalled Application` (`app_name` varchar(140));\n"
        "INSERT INTO `tabInstalled Application` VALUES " + ",".join(f"('{a}')" for a in apps) + ";\n"
        "CREATE TABLE `tabNote` (`title` varchar(140));\n"
        f"-- content tag: {tag}\n" + rows
    )


#: A line the doubles' MariaDB refuses on import (what a damaged-but-well-hashed dump holds).
BAD_SQL = "THIS IS NOT SQL;"
_USER_ROW = re.compile(r"^INSERT INTO `tabUser` VALUES (.*);$", re.MULTILINE)


def user_count(content: str) -> int | None:
    """Rows of tabUser in a database's text, or None when the table is not there."""
    if "CREATE TABLE `tabUser`" not in content:
        return None
    return sum(len(re.findall(r"\(([^)]*)\)", m.group(1))) for m in _USER_ROW.finditer(content))


def apps_in(content: str) -> list[str] | None:
    """Installed apps recorded in a database's text, or None when frappe's tables are not there."""
    if "`tabDefaultValue`" not in content:
        return None
    apps: list[str] = []
    for match in _APPS_ROW.finditer(content):
        apps += _QUOTED.findall(match.group(1))
    return apps


class DbServer:
    def __init__(self, world, project: str, service: str, host: str):
        self.world = world
        self.project = project
        self.service = service
        self.host = host  # how bench containers reach it ("db", "global-db")
        self.dir = Path(world.dir) / "dbservers" / project

    # ---- state
    def entry(self) -> dict:
        data = self.world.project(self.project) or {"services": {}}
        return data["services"].get(self.service) or {}

    def is_up(self) -> bool:
        return self.entry().get("state") == "running"

    def root_password(self) -> str | None:
        return (self.entry().get("env") or {}).get(ROOT_PASSWORD_ENV)

    def users(self) -> dict:
        try:
            return json.loads((self.dir / "users.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def save_users(self, users: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f"users.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(users))
        os.replace(tmp, self.dir / "users.json")

    def db_path(self, db: str) -> Path:
        return self.dir / "databases" / f"{db}.sql"

    def content(self, db: str) -> str | None:
        try:
            return self.db_path(db).read_text()
        except FileNotFoundError:
            return None

    def set_content(self, db: str, text: str) -> None:
        path = self.db_path(db)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def drop(self, db: str) -> None:
        self.db_path(db).unlink(missing_ok=True)

    # ---- access
    def account(self, user: str, client: str | None) -> dict | None:
        """The account MariaDB matches a connection to: `user`@`<client address>` first, then `user`@`%`.

        ``client`` is the address the connection comes from (None: unknown, only `%` accounts match)."""
        users = self.users()
        return (users.get(f"{user}@{client}") if client else None) or users.get(f"{user}@%")

    def authenticate(self, user: str, password: str | None, client: str | None = None) -> bool:
        if user == "root":
            return password is not None and password == self.root_password()
        entry = self.account(user, client)
        return entry is not None and password is not None and entry["password"] == password

    def may_manage(self, user: str, db: str, client: str | None = None) -> bool:
        """What frappe's setup_database needs: root, or ALL on this database (or on everything) WITH GRANT OPTION
        (it grants ALL on the database to the site's user), CREATE USER (`CREATE USER IF NOT EXISTS` of the
        site's user) and RELOAD (`FLUSH PRIVILEGES`)."""
        if user == "root":
            return True
        entry = self.account(user, client) or {}
        grants = entry.get("grants", [])
        on_db = any(g in (f"`{db}`.*", "*.*") for g in grants) and entry.get("grant_option", False)
        return on_db and "CREATE USER" in grants and "RELOAD" in grants

    def denied(self, user: str, password: str | None) -> str:
        return ACCESS_DENIED.format(user=user, using="YES" if password else "NO")

    def cannot_connect(self) -> str:
        return CANNOT_CONNECT.format(host=self.host)


# ------------------------------------------------ `mariadb -u U [-e SQL]` in the db container (SQL on stdin)

_CREATE_USER = re.compile(r"CREATE USER (?:IF NOT EXISTS )?'([^']+)'@'([^']+)' IDENTIFIED BY '([^']*)'$", re.I)
_GRANT = re.compile(r"GRANT (.+?) ON (\S+) TO '([^']+)'@'([^']+)'(?: WITH GRANT OPTION)?$", re.I)
_DROP_USER = re.compile(r"DROP USER (?:IF EXISTS )?'([^']+)'@'([^']+)'$", re.I)


def run_mariadb(server: DbServer, args: list[str], env: dict, stdin=None) -> int:
    """The statements the agent sends: SELECT 1, CREATE USER, GRANT, DROP USER, FLUSH PRIVILEGES.

    Like the mariadb client: the statements come from ``-e`` or, without it, from stdin (batch mode); the
    password from ``MYSQL_PWD`` in the environment (a ``-p`` in argv is refused: the agent must not use it)."""
    import sys

    user, sql, i = None, None, 0
    while i < len(args):
        a = args[i]
        if a.startswith("-u") and len(a) > 2:
            user = a[2:]
        elif a in ("-u", "--user"):
            user, i = args[i + 1], i + 1
        elif a.startswith("--user="):
            user = a.split("=", 1)[1]
        elif a in ("-e", "--execute"):
            sql, i = args[i + 1], i + 1
        elif a.startswith("-p"):
            print("double: the agent must not pass a password in argv", file=sys.stderr)
            return 2
        i += 1
    password = env.get("MYSQL_PWD")
    if password:
        server.world.note_secret("MYSQL_PWD", password)
    if not server.authenticate(user or "root", password):
        print(server.denied(user or "root", password), file=sys.stderr)
        return 1
    if sql is None:
        sql = (stdin or sys.stdin).read()
    users = server.users()
    for statement in (s.strip() for s in sql.split(";")):
        if not statement or statement.upper() in ("SELECT 1", "FLUSH PRIVILEGES"):
            if statement.upper() == "SELECT 1":
                print("1\n1")
            continue
        if m := _CREATE_USER.match(statement):
            key = f"{m.group(1)}@{m.group(2)}"
            if key in users:
                print(
                    f"ERROR 1396 (HY000): Operation CREATE USER failed for '{m.group(1)}'@'{m.group(2)}'",
                    file=sys.stderr,
                )
                return 1
            users[key] = {"host": m.group(2), "password": m.group(3), "grants": []}
            server.world.note_secret("database password", m.group(3))
        elif m := _GRANT.match(statement):
            key = f"{m.group(3)}@{m.group(4)}"
            if key not in users:
                print("ERROR 1133 (28000): Can't find any matching row in the user table", file=sys.stderr)
                return 1
            grants = users[key]["grants"]
            for priv in (p.strip().upper() for p in m.group(1).split(",")):
                grants.append(m.group(2) if priv in ("ALL", "ALL PRIVILEGES") else priv)
            if statement.upper().endswith("WITH GRANT OPTION"):
                users[key]["grant_option"] = True
        elif m := _DROP_USER.match(statement):
            key = f"{m.group(1)}@{m.group(2)}"
            if key not in users and "IF EXISTS" not in statement.upper():
                print(
                    f"ERROR 1396 (HY000): Operation DROP USER failed for '{m.group(1)}'@'{m.group(2)}'", file=sys.stderr
                )
                return 1
            users.pop(key, None)
        else:
            print(f"double: unsupported statement {statement[:60]!r}", file=sys.stderr)
            return 1
    server.save_users(users)
    return 0
