"""Names are checked before anything runs: malformed → 400, unknown → 404, and nothing executes."""

from __future__ import annotations

import urllib.parse

import pytest

BAD_NAMES = [
    "; id",
    "prod; id",
    "$(id)",
    "`id`",
    "prod\nid",
    "prod\rid",
    "-prod",
    "--help",
    "..",
    "../prod",
    "prod/..",
    "a/b",
    "/etc",
    "prod\x00",
    "\x00",
    "a" * 254,
    "pr\u043ed",  # Cyrillic 'о' look-alike
    "site1.ex\u0430mple.com",  # Cyrillic 'а'
    "prod\u200b",  # zero-width space
    "ｐｒｏｄ",  # full-width
    "prod id",
    "prod|id",
    "prod&id",
    "prod>x",
    "'prod'",
    '"prod"',
    "*",
    "",
    "~root",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_malformed_stack_name_in_an_action_is_400_and_nothing_runs(client, world, bad):
    res = client.post_action("restart_stack", bad)
    assert res.status == 400, res
    assert "not a valid stack name" in res.json()["message"]
    assert world.doubles.invocations() == []


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("stack", ["prod", "erp"])
def test_malformed_site_name_in_an_action_is_400_and_nothing_runs(client, world, bad, stack):
    for action in ("backup_site", "migrate_site", "restart_site"):
        res = client.post_action(action, stack, bad)
        assert res.status == 400, (action, res)
        assert "not a valid site name" in res.json()["message"]
    assert world.doubles.invocations() == []


def test_over_long_stack_name_is_400(client, world):
    assert client.post_action("restart_stack", "a" * 64).status == 400
    assert world.doubles.invocations() == []


@pytest.mark.parametrize("bad", [b for b in BAD_NAMES if b and "/" not in b])
def test_malformed_names_in_urls_are_400_and_nothing_runs(client, world, bad):
    # PATH_INFO as a WSGI server hands it over: decoded from %-escapes, latin-1 bytes.
    raw = bad.encode("utf-8").decode("latin-1")
    for path in (
        f"/stacks/{raw}",
        f"/stacks/{raw}/sites",
        f"/backups/{raw}/site1.example.com",
        f"/backups/prod/{raw}",
        f"/backups/prod/{raw}/2026-01-01_00-00-00.sql.gz",
    ):
        res = client.get(path)
        assert res.status == 400, (path, res)
        assert res.json()["success"] is False
    res = client.get("/jobs", query="stack=" + urllib.parse.quote(bad))
    assert res.status == 400
    assert world.doubles.invocations() == []


def test_unknown_stack_is_404_everywhere(client, world):
    assert client.post_action("restart_stack", "nosuch").status == 404
    assert client.post_action("backup_site", "nosuch", "site1.example.com").status == 404
    for path in (
        "/stacks/nosuch",
        "/stacks/nosuch/sites",
        "/backups/nosuch/site1.example.com",
        "/backups/nosuch/site1.example.com/2026-01-01_00-00-00.sql.gz",
    ):
        res = client.get(path)
        assert res.status == 404, path
        assert "nosuch" in res.json()["message"]
    assert world.doubles.invocations() == []


@pytest.mark.parametrize("stack", ["prod", "erp"])
def test_unknown_site_is_404_and_no_action_runs(client, world, stack):
    for action in ("backup_site", "migrate_site", "restart_site"):
        res = client.post_action(action, stack, "other.example.com")
        assert res.status == 404
        assert "other.example.com" in res.json()["message"]
    # Only the site listing ran (compose asks the container); no bench, restart or cp.
    for argv in world.doubles.argvs():
        assert argv[-8:] == ["find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json"], argv
    assert client.services.jobs.list() == []


def test_a_site_of_another_stack_is_unknown_here(client, world):
    assert client.post_action("backup_site", "erp", "site1.example.com").status == 404
    assert client.post_action("backup_site", "prod", "erp.localhost").status == 404


def test_backup_file_names_outside_the_published_pattern_are_refused(client, world):
    for name, status in (
        ("..%2f..%2fetc%2fpasswd", 404),  # the slashes make it a path no route matches
        ("passwd", 400),
        ("2026-01-01_00-00-00.sql.gz.bak", 400),
        (".lock", 400),
        ("2026-01-01_00-00-00.tmp", 400),
    ):
        res = client.get(f"/backups/prod/site1.example.com/{urllib.parse.unquote(name)}")
        assert res.status == status, (name, res)
    assert client.get("/backups/prod/site1.example.com/2026-01-01_00-00-00.sql.gz").status == 404
