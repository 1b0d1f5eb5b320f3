"""Sites of each stack type, the site-list cache, and the parsing helpers behind backups."""

from __future__ import annotations

from support.world import LIST_SITES_ARGV
from support.wsgi import wait_job

from fmappliance.agent.inventory import Inventory, NameRejected, SitesUnavailable
from fmappliance.agent.stacks import FmStack
from fmappliance.agent.stacks.bench_backup import newest_backup_set, parse_backup_summary


def test_fm_sites_come_from_the_bench_workspace_on_the_host(client, world):
    extra = world.bench_path / "workspace" / "frappe-bench" / "sites" / "second.localhost"
    extra.mkdir()
    (extra / "site_config.json").write_text("{}")
    (world.bench_path / "workspace" / "frappe-bench" / "sites" / "assets").mkdir()  # no site_config: not a site
    assert client.get("/stacks/erp/sites").json() == {"sites": ["erp.localhost", "second.localhost"]}
    assert world.doubles.invocations() == []


def test_compose_sites_are_listed_from_the_backend_container_and_cached(client, world):
    assert client.get("/stacks/prod/sites").json() == {"sites": ["site1.example.com", "site2.example.com"]}
    assert client.get("/stacks/prod/sites").json() == {"sites": ["site1.example.com", "site2.example.com"]}
    assert world.doubles.argvs() == [
        ["compose", "--project-directory", str(world.compose_path), "exec", "-T", "backend", *LIST_SITES_ARGV]
    ]


def test_a_new_compose_site_is_found_when_an_action_names_it(client, world):
    client.get("/stacks/prod/sites")
    world.doubles.add_compose_site(world.compose_project, "site3.example.com")
    res = client.post_action("migrate_site", "prod", "site3.example.com")
    assert res.status == 202
    assert wait_job(client, res.json()["job"]["id"])["status"] == "succeeded"


def test_explicit_sites_in_the_config_are_used_without_asking_docker(world, make_client):
    world.write_config(
        stacks={"prod": {"type": "compose", "path": str(world.compose_path), "sites": ["site1.example.com"]}}
    )
    client = make_client()
    assert client.get("/stacks/prod/sites").json() == {"sites": ["site1.example.com"]}
    assert client.post_action("migrate_site", "prod", "site2.example.com").status == 404
    assert world.doubles.invocations() == []


def test_compose_sites_when_the_backend_is_down_is_a_clear_409(client, world):
    world.doubles.set_service(world.compose_project, "backend", "exited", 0)
    res = client.get("/stacks/prod/sites")
    assert res.status == 409
    assert "backend" in res.json()["message"] and "not running" in res.json()["message"]
    res = client.post_action("backup_site", "prod", "site1.example.com")
    assert res.status == 409
    # The status page still answers, with the stack partial and no sites known yet.
    prod = next(s for s in client.get("/stacks").json()["stacks"] if s["name"] == "prod")
    assert prod["status"] == "partial" and prod["sites"] == []


def test_status_keeps_the_last_known_sites_when_the_container_goes_down(world):
    inventory = Inventory(world.config)
    assert inventory.sites("prod") == ["site1.example.com", "site2.example.com"]
    world.doubles.set_service(world.compose_project, "backend", "exited", 0)
    inventory.invalidate("prod")
    assert inventory.sites_for_display("prod") == ["site1.example.com", "site2.example.com"]
    try:
        inventory.sites("prod")
        raise AssertionError("expected SitesUnavailable")
    except SitesUnavailable as exc:
        assert "not running" in str(exc)


def test_check_stack_and_site_statuses(world):
    inventory = Inventory(world.config)
    assert inventory.check_stack("erp")["type"] == "fm"
    for name, status in (("nosuch", 404), ("; id", 400), ("", 400), (None, 400), (5, 400)):
        try:
            inventory.check_stack(name)
            raise AssertionError(name)
        except NameRejected as exc:
            assert exc.status == status
    assert inventory.check_site("erp", "erp.localhost") == "erp.localhost"


def test_fm_home_is_the_bench_grandparent_and_bench_runs_as_fm_runs_it_without_a_shell(world):
    bench = FmStack(world.config["stacks"]["erp"])
    assert bench.home == str(world.fm_home)
    assert bench.env()["FRAPPE_MANAGER_HOME"] == str(world.fm_home)
    args = ("--site", "erp.localhost", "execute", "frappe.db.count", "--args", '["User"]')
    assert bench.bench_argv("docker", *args) == [
        "docker",
        "compose",
        "-f",
        str(world.bench_path / "docker-compose.yml"),
        "exec",
        "-T",
        "--user",
        "frappe",
        "--workdir",
        "/workspace/frappe-bench",
        "frappe",
        "bench",
        *args,  # one argv word each: no shell, so nothing is re-quoted
    ]


SUMMARY = """⚠ The command 'fm' has been renamed to 'fmx'
Backup Summary for erp.localhost at 2026-01-13 02:00:03.412345
Config  : /workspace/frappe-bench/sites/erp.localhost/private/backups/20260113_020000-erp_localhost-site_config_backup.json 2.1KiB
Database: /workspace/frappe-bench/sites/erp.localhost/private/backups/20260113_020000-erp_localhost-database.sql.gz 1.5MiB
Public  : /workspace/frappe-bench/sites/erp.localhost/private/backups/20260113_020000-erp_localhost-files.tar 10.0KiB
Private : /workspace/frappe-bench/sites/erp.localhost/private/backups/20260113_020000-erp_localhost-private-files.tar 10.0KiB
Backup for Site erp.localhost has been successfully completed with files
"""


def test_backup_summary_is_parsed_into_parts():
    parts = parse_backup_summary(SUMMARY, "erp.localhost")
    assert {k: v.rsplit("/", 1)[1] for k, v in parts.items()} == {
        "site_config": "20260113_020000-erp_localhost-site_config_backup.json",
        "database": "20260113_020000-erp_localhost-database.sql.gz",
        "files": "20260113_020000-erp_localhost-files.tar",
        "private-files": "20260113_020000-erp_localhost-private-files.tar",
    }
    assert parse_backup_summary(SUMMARY, "other.localhost") == {}
    assert (
        parse_backup_summary(SUMMARY.replace("Database: /workspace", "Database: ;rm /workspace"), "erp.localhost").get(
            "database"
        )
        is None
    )


def test_newest_backup_set_picks_the_latest_complete_timestamp():
    names = [
        "20260112_020000-s-database.sql.gz",
        "20260112_020000-s-files.tar",
        "20260113_020000-s-database.sql.gz",
        "20260113_020000-s-site_config_backup.json",
        "20260114_020000-s-files.tar",  # no dump: not a backup
        "notes.txt",
    ]
    assert newest_backup_set(names) == {
        "database": "20260113_020000-s-database.sql.gz",
        "site_config": "20260113_020000-s-site_config_backup.json",
    }
    assert newest_backup_set([]) == {}
