"""Issue 20, item 2: a docker CLI without the compose plugin (both of Docker 27's answers) is named
as such, in the stacks' status and in a failed job, instead of docker's "See 'docker --help'"."""

from __future__ import annotations

from test_actions import run_action

SENTENCE = "docker compose is not available: install the docker compose plugin"


def test_a_job_on_a_docker_without_the_compose_plugin_says_what_is_missing(world, client):
    world.doubles.set_faults(no_compose_plugin=True)
    job = run_action(client, "restart_stack", "prod", expect="failed")  # docker compose --project-directory …
    assert job["message"] == SENTENCE, job
    # Status: the compose stack (a flag after "compose") and the fm bench (-f <bench>/docker-compose.yml).
    for stack in client.get("/stacks").json()["stacks"]:
        assert stack["reason"] == SENTENCE, stack
