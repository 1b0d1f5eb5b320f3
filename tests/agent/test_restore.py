"""restore_site against the doubles, through the real agent process, for both stack types.

The doubles' databases carry content, so each test can tell which dump a site holds afterwards.
"""

from __future__ import annotations

import json

import pytest
from restore_support import (
    ROOT_PASSWORDS,
    TARGETS,
    backup,
    bench_calls,
    content,
    db_service,
    listing,
    published_dir,
    published_dump,
    restore,
    server,
    set_content,
    site_config,
    update_site_config,
)

KINDS = sorted(TARGETS)


@pytest.fixture
def agent(world, agent_process):
    return agent_process()


def assert_no_root_password_anywhere(world, agent, jobs):
    argvs = json.dumps([c["argv"] for c in world.doubles.invocations()])
    log = (world.root / "agent.log").read_text()
    published = "".join(
        p.read_text(errors="replace") for p in published_dir(world, "prod", "x").parent.parent.rglob("*.json")
    )
    for password in ROOT_PASSWORDS:
        assert password not in argvs
        assert password not in log
        assert password not in published
        for job in jobs:
            assert password not in job["output"] and password not in job["message"]
            assert password not in json.dumps(job["result"])


@pytest.mark.parametrize("kind", KINDS)
def test_restore_brings_back_the_backups_data_with_a_safety_backup_first(world, agent, kind):
    stack, site = TARGETS[kind]
    set_content(world, stack, site, "monday")
    monday = backup(agent, stack, site)
    assert monday["label"] == "manual" and monday["apps"] == ["frappe", "erpnext"]
    set_content(world, stack, site, "tuesday")
    update_site_config(world, stack, site, pause_scheduler=0)

    job = restore(agent, stack, site, monday["id"])

    assert "-- content tag: monday" in content(world, stack, site)
    config = site_config(world, stack, site)
    assert config["maintenance_mode"] == 0 and config["pause_scheduler"] == 0
    # The safety backup came first, is labelled, and holds what the site had before.
    safety = job["result"]["safety_backup"]
    labels = {b["id"]: b["label"] for b in listing(agent, stack, site)}
    assert labels[safety] == "pre-restore" and labels[monday["id"]] == "manual"
    assert "-- content tag: tuesday" in published_dump(world, stack, site, safety)
    out = job["output"]
    steps = [
        "step 1: preflight",
        "preflight passed",
        "step 2: safety backup",
        "step 3: maintenance mode on",
        "step 4: restore",
        "step 5: migrate",
    ]
    assert [out.index(s) for s in steps] == sorted(out.index(s) for s in steps)
    assert "has been restored with files" in out
    # bench ran as a temporary user that is gone now, never as root.
    # Its login and password reached bench through the site config for that step only, never through argv.
    restores = bench_calls(world, ("--force", "restore"))
    assert len(restores) == 1 and "--db-root-password" not in " ".join(restores[0])
    assert "created the temporary database user fma_restore_" in out
    assert not {"root_login", "root_password"} & set(site_config(world, stack, site))
    assert server(world, stack).users() == {}
    assert_no_root_password_anywhere(world, agent, [job])
    # The scheduler comes back as it was: paused stays paused.
    update_site_config(world, stack, site, pause_scheduler=1)
    restore(agent, stack, site, monday["id"])
    assert site_config(world, stack, site)["pause_scheduler"] == 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("step", ["bench restore", "bench migrate"])
def test_a_restore_failing_midway_rolls_back_to_exactly_the_previous_data(world, agent, kind, step):
    stack, site = TARGETS[kind]
    set_content(world, stack, site, "good")
    good = backup(agent, stack, site)
    before = set_content(world, stack, site, "current")
    world.doubles.update_faults(fail={step: {"rc": 1, "times": 1}})

    job = restore(agent, stack, site, good["id"], expect="failed")

    safety = next(b["id"] for b in listing(agent, stack, site) if b["label"] == "pre-restore")
    assert f"rolled back to {safety}" in job["message"]
    assert f"rolled back to {safety}" in job["output"]
    restored = content(world, stack, site)
    assert "-- content tag: current" in restored and "-- content tag: good" not in restored
    assert before in restored  # every row the site had, nothing more (bench adds only its header and trailer)
    assert len(restored) - len(before) < 200
    assert site_config(world, stack, site)["maintenance_mode"] == 0
    assert server(world, stack).users() == {}


@pytest.mark.parametrize("kind", KINDS)
def test_a_failing_roll_back_leaves_maintenance_on_and_says_so(world, agent, kind):
    stack, site = TARGETS[kind]
    good = backup(agent, stack, site)
    world.doubles.update_faults(fail={"bench restore": 1})

    job = restore(agent, stack, site, good["id"], expect="failed")

    assert "failed too" in job["message"] and "Maintenance mode stays on" in job["message"]
    assert site_config(world, stack, site)["maintenance_mode"] == 1
    assert server(world, stack).users() == {}
    assert_no_root_password_anywhere(world, agent, [job])


def _changed_nothing(world, agent, stack, site, before_content, before_ids):
    assert content(world, stack, site) == before_content
    assert [b["id"] for b in listing(agent, stack, site)] == before_ids
    assert bench_calls(world, ("restore",)) == [] or all(
        "--force" not in " ".join(c) for c in bench_calls(world, ("restore",))
    )
    assert bench_calls(world, ("set-maintenance-mode",)) == []
    assert "maintenance_mode" not in site_config(world, stack, site)
    assert server(world, stack).users() == {}


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_refuses_a_damaged_backup_and_changes_nothing(world, agent, kind):
    stack, site = TARGETS[kind]
    good = backup(agent, stack, site)
    dump = published_dir(world, stack, site) / f"{good['id']}.sql.gz"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    before, ids = set_content(world, stack, site, "now"), [b["id"] for b in listing(agent, stack, site)]
    world.doubles.clear_invocations()

    job = restore(agent, stack, site, good["id"], expect="failed")

    assert job["message"].startswith("Preflight failed, nothing was changed:")
    assert "does not match its manifest" in job["message"] or "corrupt" in job["message"]
    _changed_nothing(world, agent, stack, site, before, ids)


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_refuses_a_backup_with_an_app_the_bench_lacks(world, agent, kind):
    stack, site = TARGETS[kind]
    set_content(world, stack, site, "hr", apps=("frappe", "erpnext", "hrms"))
    with_hrms = backup(agent, stack, site)
    assert with_hrms["apps"] == ["frappe", "erpnext", "hrms"]
    before, ids = set_content(world, stack, site, "now"), [b["id"] for b in listing(agent, stack, site)]
    world.doubles.clear_invocations()

    job = restore(agent, stack, site, with_hrms["id"], expect="failed")

    assert "Preflight failed" in job["message"] and "hrms" in job["message"]
    _changed_nothing(world, agent, stack, site, before, ids)


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_refuses_when_the_database_is_down(world, agent, kind):
    stack, site = TARGETS[kind]
    good = backup(agent, stack, site)
    before, ids = set_content(world, stack, site, "now"), [b["id"] for b in listing(agent, stack, site)]
    world.doubles.set_service(*db_service(world, stack), "exited", 0)
    world.doubles.clear_invocations()

    job = restore(agent, stack, site, good["id"], expect="failed")

    assert "Preflight failed, nothing was changed" in job["message"]
    _changed_nothing(world, agent, stack, site, before, ids)
    assert_no_root_password_anywhere(world, agent, [job])


@pytest.mark.parametrize("kind", KINDS)
def test_preflight_refuses_a_dump_without_auth_table(world, agent, kind):
    stack, site = TARGETS[kind]
    server(world, stack).set_content(
        site_config(world, stack, site)["db_name"], "CREATE TABLE `tabDefaultValue` (`name` varchar(140));\n"
    )
    no_auth = backup(agent, stack, site)
    before, ids = set_content(world, stack, site, "now"), [b["id"] for b in listing(agent, stack, site)]
    world.doubles.clear_invocations()

    job = restore(agent, stack, site, no_auth["id"], expect="failed")

    assert "__Auth" in job["message"]
    _changed_nothing(world, agent, stack, site, before, ids)


def test_a_backup_restored_onto_another_site_carries_the_encryption_key_over(world, agent):
    update_site_config(world, "prod", "site1.example.com", encryption_key="source-key-123")
    update_site_config(world, "prod", "site2.example.com", encryption_key="target-key-456")
    set_content(world, "prod", "site1.example.com", "from-site1")
    source = backup(agent, "prod", "site1.example.com")

    job = restore(agent, "prod", "site2.example.com", source["id"], from_site="site1.example.com")

    assert "-- content tag: from-site1" in content(world, "prod", "site2.example.com")
    assert site_config(world, "prod", "site2.example.com")["encryption_key"] == "source-key-123"
    assert "carried the source site's encryption_key over to site2.example.com" in job["output"]
    assert "source-key-123" not in job["output"]


def test_a_backup_of_an_fm_bench_restores_onto_a_new_compose_site(world, agent):
    set_content(world, "erp", "erp.localhost", "from-fm")
    source = backup(agent, "erp", "erp.localhost")

    job = restore(
        agent, "prod", "new.example.com", source["id"], from_stack="erp", from_site="erp.localhost", create_site=True
    )

    assert "-- content tag: from-fm" in content(world, "prod", "new.example.com")
    assert job["result"]["safety_backup"] is None
    assert site_config(world, "prod", "new.example.com")["maintenance_mode"] == 0
    status, res = agent.request("GET", "/stacks/prod/sites")
    assert "new.example.com" in res["sites"]
    assert server(world, "prod").users() == {}
    assert_no_root_password_anywhere(world, agent, [job])


def test_create_site_on_an_fm_stack_is_refused_with_what_to_do(world, agent):
    source = backup(agent, "erp", "erp.localhost")
    status, res = agent.request(
        "POST",
        "/action",
        {
            "action": "restore_site",
            "stack": "erp",
            "site": "other.localhost",
            "backup": source["id"],
            "create_site": True,
        },
    )
    assert status == 400 and "fm create" in res["message"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"backup": "2020-01-01_00-00-00"}, 404, "There is no backup 2020-01-01_00-00-00"),
        ({"backup": "yesterday"}, 400, "backup id"),
        ({}, 400, "needs the field 'backup'"),
        ({"backup": "2020-01-01_00-00-00", "create_site": "yes"}, 400, "create_site must be true or false"),
        ({"backup": "2020-01-01_00-00-00", "from_stack": "nope"}, 404, "no stack named"),
        ({"backup": "2020-01-01_00-00-00", "from_site": "../etc"}, 400, "site name"),
        ({"backup": "2020-01-01_00-00-00", "command": "id"}, 400, "Unexpected field"),
    ],
)
def test_bad_restore_requests_are_refused_and_run_nothing(world, agent, body, status, words):
    code, res = agent.request(
        "POST", "/action", {"action": "restore_site", "stack": "prod", "site": "site1.example.com", **body}
    )
    assert code == status and words in res["message"], res
    assert agent.request("GET", "/jobs")[1]["jobs"] == []


def test_backup_site_takes_a_label_from_the_caller_but_not_an_agent_one(world, agent):
    scheduled = backup(agent, "prod", "site1.example.com", label="scheduled")
    assert scheduled["label"] == "scheduled"
    assert listing(agent, "prod", "site1.example.com")[0]["label"] == "scheduled"
    status, res = agent.request(
        "POST",
        "/action",
        {"action": "backup_site", "stack": "prod", "site": "site1.example.com", "label": "pre-restore"},
    )
    assert status == 400 and "manual" in res["message"]
