"""The stack drivers (issue 22 item 2): one per stack type the config accepts, each answering the
type-specific questions itself, so that no caller outside stacks/ needs the type."""

from __future__ import annotations

import pytest

from fmappliance import config as cfg
from fmappliance.agent import stacks
from fmappliance.agent.stacks import ComposeStack, FmStack, RunningState, StackUnsupported


def _type_check():
    (key,) = [k for k in cfg.STACK.keys if k.name == "type"]
    return key.check


def test_every_stack_type_the_config_accepts_has_a_driver_of_that_kind(tmp_path):
    check = _type_check()
    kinds = {"compose", "fm"}
    for kind in kinds:
        assert check(kind) is None
        driver = stacks.for_stack({"type": kind, "path": str(tmp_path), "sites": []})
        assert driver.kind == kind
    assert check("podman") == "expected one of: compose, fm"
    assert {type(stacks.for_stack({"type": k, "path": "/x"})) for k in kinds} == {ComposeStack, FmStack}


def test_a_compose_stack_lists_configured_sites_itself_and_asks_the_container_otherwise():
    named = ComposeStack({"type": "compose", "path": "/opt/fd", "sites": ["b.example.com", "a.example.com"]})
    assert not named.sites_in_container
    assert named.list_sites("docker-that-is-never-run", 5) == ["a.example.com", "b.example.com"]
    assert ComposeStack({"type": "compose", "path": "/opt/fd", "sites": []}).sites_in_container


def test_a_compose_stack_without_docker_cannot_list_its_sites():
    driver = ComposeStack({"type": "compose", "path": "/opt/fd", "sites": []})
    with pytest.raises(stacks.SitesUnavailable, match=r"docker \(/nonexistent/docker\) was not found"):
        driver.list_sites("/nonexistent/docker", 5)


def test_an_fm_bench_reads_its_sites_on_the_host(tmp_path):
    sites = tmp_path / "workspace" / "frappe-bench" / "sites"
    for name in ("erp.localhost", "assets"):
        (sites / name).mkdir(parents=True)
    (sites / "erp.localhost" / "site_config.json").write_text("{}")
    driver = FmStack({"type": "fm", "path": str(tmp_path)})
    assert not driver.sites_in_container
    assert driver.list_sites("docker", 5) == ["erp.localhost"]


def test_only_a_compose_stack_creates_sites_in_a_restore():
    assert ComposeStack({"type": "compose", "path": "/x"}).new_site_refusal() is None
    refusal = FmStack({"type": "fm", "path": "/x"}).new_site_refusal()
    assert refusal is not None and "fm create" in refusal


@pytest.mark.parametrize(
    "driver", [ComposeStack({"type": "compose", "path": "/x"}), FmStack({"type": "fm", "path": "/x"})]
)
def test_restore_steps_without_docker_say_which_setting_names_it(driver):
    with pytest.raises(StackUnsupported, match=r"agent\.docker_binary"):
        driver.site_ops(lambda key: None, "/tmp/state")


def test_roll_back_of_a_compose_update_without_digests_names_what_was_not_rolled_back():
    class NoJob:
        def log(self, text):  # pragma: no cover - nothing to log when nothing can be pinned
            raise AssertionError(text)

    driver = ComposeStack({"type": "compose", "path": "/x"})
    done, failed = driver.roll_back(NoJob(), lambda key: "/usr/bin/docker", "prod", RunningState(), "/tmp", 60)
    assert (done, failed) == ([], ["the images: none had a repo digest to pin"])
    # an fm bench's code is updated in place: only its databases (restored by the caller) go back
    fm = FmStack({"type": "fm", "path": "/x"})
    assert fm.roll_back(NoJob(), lambda key: "fm", "erp", RunningState(commits={"frappe": "abc"}), "/tmp", 60) == (
        [],
        [],
    )
