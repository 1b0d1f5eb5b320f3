"""The dashboard tests' fake agent keeps the real agent's contract: the same requests, the same shapes.

The same requests go to the fake (tests/dashboard/fake_agent.py, in-process) and to the real agent
(a process on port 0 over the docker double and the real fm, tests/support/world.py); the answers
must agree in status, in keys and in the types of their values (a null matches anything: a job
not started yet has no start time), and a refusal in its sentence too.  A shape the dashboard reads
from the fake that the real agent never sends (or the other way) fails here, not in production.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from support.config_factory import TEST_TOKEN
from support.world import COMPOSE_SITES, FM_SITE, build_world, json_request, kill_hanging_doubles, start_agent

from fmappliance import wire

sys.path.insert(0, str(Path(__file__).resolve().parent / "dashboard"))
import fake_agent as fake_module  # noqa: E402

pytestmark = pytest.mark.slow

SITE = COMPOSE_SITES[0]
SCHEDULE = {"id": "s1", "stack": "prod", "site": "*", "frequency": "daily", "time": "02:00", "timezone": "UTC"}


class Side:
    """One agent behind a URL, asked with the shared token."""

    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def ask(self, method: str, path: str, body=None, *, token: str | None = "default"):
        return json_request(self.url + path, method, body, self.token if token == "default" else token)


@pytest.fixture(scope="module")
def sides(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("contract"))
    real = start_agent(world)
    fake = fake_module.FakeAgent(
        [
            fake_module.make_stack("erp", [FM_SITE], kind="fm"),
            fake_module.make_stack("prod", list(COMPOSE_SITES)),
        ],
        token=TEST_TOKEN,
    )
    fake.allowed_actions = set(world.config["security"]["allowed_actions"])
    fake.start()
    try:
        yield Side(fake.url, TEST_TOKEN), Side(real.url, TEST_TOKEN)
    finally:
        fake.stop()
        real.stop()
        kill_hanging_doubles(world.doubles)


def shape(value):
    """Keys and value types, recursively; a list is the shape of its first item."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def differences(fake, real, where: str = "") -> list[str]:
    """Where the two shapes disagree (None, an empty list, and any value of a free-form map match anything)."""
    if fake is None or real is None or fake == [] or real == []:
        return []
    if isinstance(fake, dict) and isinstance(real, dict):
        found = [f"{where}.{k}: only the fake sends it" for k in sorted(set(fake) - set(real))]
        found += [f"{where}.{k}: only the real agent sends it" for k in sorted(set(real) - set(fake))]
        for key in sorted(set(fake) & set(real)):
            found += differences(fake[key], real[key], f"{where}.{key}")
        return found
    if isinstance(fake, list) and isinstance(real, list):
        return differences(fake[0], real[0], where + "[]")
    return [] if fake == real else [f"{where}: the fake sends {fake}, the real agent {real}"]


def compare(sides, method: str, path: str, body=None, *, same_message: bool = False, **kwargs):
    fake, real = sides
    fake_status, fake_answer = fake.ask(method, path, body, **kwargs)
    real_status, real_answer = real.ask(method, path, body, **kwargs)
    assert fake_status == real_status, (
        f"{method} {path}: fake {fake_status} {fake_answer}, real {real_status} {real_answer}"
    )
    drift = differences(shape(fake_answer), shape(real_answer))
    assert not drift, f"{method} {path}:\n" + "\n".join(drift)
    if same_message:
        assert fake_answer["message"] == real_answer["message"], f"{method} {path}"
    return fake_answer, real_answer


def test_health_and_the_stack_list_have_the_same_shape(sides):
    compare(sides, "GET", "/")
    fake, real = compare(sides, "GET", "/stacks")
    assert [s["name"] for s in fake["stacks"]] == [s["name"] for s in real["stacks"]]


def test_one_stack_and_an_unknown_one(sides):
    compare(sides, "GET", "/stacks/prod")
    compare(sides, "GET", "/stacks/nope", same_message=True)


def test_an_action_its_job_and_the_job_list(sides):
    fake, real = compare(sides, "POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})
    assert fake["message"] == real["message"] == f"Backup of {SITE} on prod started."
    assert set(fake["job"]) == set(real["job"]) == set(wire.JOB_FIELDS)
    ended = [_wait(side, answer["job"]["id"]) for side, answer in zip(sides, (fake, real), strict=True)]
    assert [job["status"] for job in ended] == [wire.SUCCEEDED, wire.SUCCEEDED], ended
    drift = differences(shape(ended[0]), shape(ended[1]))
    assert not drift, "\n".join(drift)
    compare(sides, "GET", "/jobs")
    compare(sides, "GET", "/jobs?limit=5&stack=prod")
    compare(sides, "GET", "/jobs/0123456789abcdef", same_message=True)


def _wait(side: Side, job_id: str) -> dict:
    from support.polling import wait_for

    def ended():
        status, job = side.ask("GET", f"/jobs/{job_id}")
        return job if status == 200 and job["status"] in wire.FINISHED else None

    return wait_for(ended, 60, f"job {job_id} to end")


@pytest.mark.parametrize(
    "body",
    [
        {"action": "reboot_everything", "stack": "prod"},
        {"action": "restart_stack"},
        {"action": "restart_stack", "stack": "prod", "site": SITE},
        {"action": "backup_site", "stack": "prod"},
        {"action": "backup_site", "stack": "prod", "site": SITE, "label": "pre-update"},
        {"action": "backup_site", "stack": "prod", "site": SITE, "colour": "red"},
        {"action": "restore_site", "stack": "prod", "site": SITE},
        {"action": "restore_site", "stack": "prod", "site": SITE, "backup": "yesterday"},
        {"action": "test_restore", "stack": "prod", "site": SITE, "source": "tape"},
        {"action": "import_backup", "stack": "prod", "site": SITE, "name": "../etc"},
        {"action": "offsite_check", "stack": "prod"},
    ],
    ids=lambda body: "-".join(str(v) for v in body.values())[:60],
)
def test_refused_actions_answer_the_same_status_and_sentence(sides, body):
    compare(sides, "POST", "/action", body, same_message=True)


def test_an_unknown_stack_and_an_unconfigured_offsite_are_404s(sides):
    compare(sides, "POST", "/action", {"action": "restart_stack", "stack": "nope"}, same_message=True)
    body = {"action": "migrate_site", "stack": "prod", "site": "gone.example.com"}
    compare(sides, "POST", "/action", body, same_message=True)
    compare(sides, "POST", "/action", {"action": "offsite_check"}, same_message=True)
    compare(sides, "GET", f"/offsite/prod/{SITE}", same_message=True)


def test_backups_imports_and_schedules_have_the_same_shape(sides):
    compare(sides, "GET", f"/backups/prod/{SITE}")
    compare(sides, "GET", "/backups/prod/gone.example.com")  # a removed site's backups stay listable
    compare(sides, "GET", f"/backups/nope/{SITE}", same_message=True)
    compare(sides, "GET", "/imports")
    compare(sides, "PUT", "/schedules", {"version": 3, "catchup_hours": 6, "schedules": [SCHEDULE]})
    compare(sides, "GET", "/schedules")
    compare(sides, "GET", "/schedules/history")
    compare(sides, "PUT", "/schedules", {"version": 2, "catchup_hours": 6, "schedules": [SCHEDULE]}, same_message=True)


def test_a_wrong_token_is_a_401_on_both(sides):
    compare(sides, "GET", "/stacks", token="not-the-token")
