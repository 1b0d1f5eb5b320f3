"""The doubles' database side behaves as docs/doubles.md ("Restores") describes bench restore and MariaDB."""

from __future__ import annotations

import gzip
import json
import subprocess

from restore_support import server, set_content, site_config
from support.world import COMPOSE_DB_ROOT_PASSWORD

SITE = "site1.example.com"


def compose(world, *args, env=None, stdin=None):
    return subprocess.run(
        [world.docker, "compose", "--project-directory", str(world.compose_path), *args],
        capture_output=True,
        text=True,
        **({"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}),
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def bench(world, *args):
    return compose(world, "exec", "-T", "backend", "bench", *args)


def mariadb(world, sql, password=COMPOSE_DB_ROOT_PASSWORD):
    return compose(
        world, "exec", "-T", "-e", "MYSQL_PWD", "db", "mariadb", "-uroot", "-e", sql, env={"MYSQL_PWD": password}
    )


def dump_path(world, name: str, text: str) -> str:
    host = world.doubles.volume_bench(world.compose_project) / "sites" / SITE / "private" / name
    host.write_bytes(gzip.compress(text.encode()))
    return f"/home/frappe/frappe-bench/sites/{SITE}/private/{name}"


def test_root_is_checked_against_the_db_service_password_and_temp_users_come_and_go(world):
    assert mariadb(world, "SELECT 1", password="wrong").returncode == 1
    assert "Access denied" in mariadb(world, "SELECT 1", password="wrong").stderr
    assert mariadb(world, "SELECT 1").returncode == 0
    refused = compose(world, "exec", "-T", "db", "mariadb", "-uroot", f"-p{COMPOSE_DB_ROOT_PASSWORD}", "-e", "SELECT 1")
    assert refused.returncode != 0  # the double refuses a password in argv
    assert (
        mariadb(
            world,
            "CREATE USER 'tmp'@'%' IDENTIFIED BY 'pw1'; GRANT ALL ON *.* TO 'tmp'@'%'; "
            "GRANT RELOAD, CREATE USER ON *.* TO 'tmp'@'%'",
        ).returncode
        == 0
    )
    assert set(server(world, "prod").users()) == {"tmp@%"}
    assert mariadb(world, "DROP USER IF EXISTS 'tmp'@'%'").returncode == 0
    assert server(world, "prod").users() == {}
    assert (
        compose(world, "exec", "-T", "db", "printenv", "MYSQL_ROOT_PASSWORD").stdout.strip() == COMPOSE_DB_ROOT_PASSWORD
    )


def test_bench_restore_refills_the_database_and_needs_credentials_and_auth(world):
    set_content(world, "prod", SITE, "before")
    good = dump_path(
        world,
        "good.sql.gz",
        "CREATE TABLE `__Auth` (x int);\nCREATE TABLE `tabDefaultValue` (x int);\n-- content tag: restored\n",
    )
    no_auth = dump_path(world, "noauth.sql.gz", "CREATE TABLE `tabDefaultValue` (x int);\n")

    res = bench(world, "--site", SITE, "restore", good)
    assert res.returncode == 1 and "Aborted" in res.stdout  # no root password: bench would prompt
    res = bench(world, "--site", SITE, "restore", no_auth, "--db-root-password", COMPOSE_DB_ROOT_PASSWORD)
    assert res.returncode == 1 and "__Auth" in res.stdout  # refused without --force
    res = bench(
        world, "--site", SITE, "--force", "restore", good, "--db-root-username", "nobody", "--db-root-password", "x"
    )
    assert res.returncode == 1 and "Access denied" in res.stdout
    assert "-- content tag: before" in server(world, "prod").content(site_config(world, "prod", SITE)["db_name"])

    res = bench(world, "--site", SITE, "--force", "restore", good, "--db-root-password", COMPOSE_DB_ROOT_PASSWORD)
    assert res.returncode == 0 and f"Site {SITE} has been restored" in res.stdout
    assert "-- content tag: restored" in server(world, "prod").content(site_config(world, "prod", SITE)["db_name"])


def test_a_failed_import_leaves_a_partial_database_and_the_site_stops_answering(world):
    set_content(world, "prod", SITE, "before")
    good = dump_path(
        world,
        "good.sql.gz",
        "CREATE TABLE `__Auth` (x int);\nCREATE TABLE `tabDefaultValue` (x int);\n"
        + "INSERT INTO `tabNote` VALUES ('row');\n" * 100,
    )
    world.doubles.update_faults(fail={"bench restore": 1})
    res = bench(world, "--site", SITE, "--force", "restore", good, "--db-root-password", COMPOSE_DB_ROOT_PASSWORD)
    assert res.returncode == 1
    assert "-- content tag: before" not in server(world, "prod").content(site_config(world, "prod", SITE)["db_name"])
    assert bench(world, "--site", SITE, "list-apps").returncode == 1


def test_maintenance_scheduler_and_new_site_live_in_site_config(world):
    assert bench(world, "--site", SITE, "set-maintenance-mode", "on").returncode == 0
    assert bench(world, "--site", SITE, "scheduler", "pause").returncode == 0
    config = site_config(world, "prod", SITE)
    assert config["maintenance_mode"] == 1 and config["pause_scheduler"] == 1
    res = bench(
        world,
        "new-site",
        "fresh.example.com",
        "--db-root-password",
        COMPOSE_DB_ROOT_PASSWORD,
        "--admin-password",
        "a",
        "--db-name",
        "_fresh",
    )
    assert res.returncode == 0
    assert site_config(world, "prod", "fresh.example.com")["db_name"] == "_fresh"
    assert (
        bench(world, "--site", "fresh.example.com", "list-apps", "--format", "json").stdout.strip()
        == '{"fresh.example.com": ["frappe"]}'
    )
    assert bench(world, "new-site", "fresh.example.com", "--db-root-password", COMPOSE_DB_ROOT_PASSWORD).returncode == 1


def test_a_fault_with_times_heals_after_that_many_calls(world):
    world.doubles.update_faults(fail={"bench migrate": {"rc": 1, "times": 1}})
    assert bench(world, "--site", SITE, "migrate").returncode == 1
    assert bench(world, "--site", SITE, "migrate").returncode == 0


def test_mariadb_reads_sql_from_stdin_and_accounts_match_the_connecting_address(world):
    """An account is user@host: bench connects from its container's address (docker inspect), and reads the
    root login and password from the site config (frappe's get_root_connection) when no flag names them."""
    set_content(world, "prod", SITE, "before")
    env = {"MYSQL_PWD": COMPOSE_DB_ROOT_PASSWORD}
    ps = compose(world, "ps", "--all", "--format", "json")
    backend = next(json.loads(line)["Name"] for line in ps.stdout.splitlines() if '"Service":"backend"' in line)
    inspect = subprocess.run(
        [world.docker, "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", backend],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    address = inspect.stdout.split()[0]
    db = site_config(world, "prod", SITE)["db_name"]

    def account(host):
        sql = (
            f"CREATE USER 'r1'@'{host}' IDENTIFIED BY 'pw'; GRANT ALL PRIVILEGES ON `{db}`.* TO 'r1'@'{host}' "
            f"WITH GRANT OPTION; GRANT RELOAD, CREATE USER ON *.* TO 'r1'@'{host}'; FLUSH PRIVILEGES"
        )
        assert (
            compose(world, "exec", "-T", "-e", "MYSQL_PWD", "db", "mariadb", "-uroot", env=env, stdin=sql).returncode
            == 0
        )

    good = dump_path(
        world, "good.sql.gz", "CREATE TABLE `__Auth` (x int);\nCREATE TABLE `tabDefaultValue` (x int);\n-- tag: new\n"
    )
    config = site_config(world, "prod", SITE)
    path = world.doubles.volume_bench(world.compose_project) / "sites" / SITE / "site_config.json"
    path.write_text(json.dumps({**config, "root_login": "r1", "root_password": "pw"}))
    account("10.9.9.9")  # another container's address: bench is refused
    res = bench(world, "--site", SITE, "--force", "restore", good)
    assert res.returncode == 1 and "Access denied" in res.stdout
    account(address)
    res = bench(world, "--site", SITE, "--force", "restore", good)
    assert res.returncode == 0, res.stdout
    assert "-- tag: new" in server(world, "prod").content(db)
    assert set(server(world, "prod").users()) == {"r1@10.9.9.9", f"r1@{address}"}
