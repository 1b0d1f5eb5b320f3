"""GET /stacks/{name}/logs: argv, validation, redaction, and - against a real agent process -
followed streams, their limit, and the child killed when the client goes away."""

from __future__ import annotations

import http.client
import os

import pytest
from support.config_factory import TEST_TOKEN
from support.polling import wait_for
from support.streams import LineStream

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def logs_argvs(world):
    return [argv for argv in world.doubles.argvs("docker") if "logs" in argv]


# ---------------------------------------------------------------------- in-process


def test_last_lines_of_a_compose_service_with_timestamps(client, world):
    world.doubles.write_log(world.compose_project, "backend", *(f"line {i}" for i in range(300)))
    res = client.get("/stacks/prod/logs", query="service=backend&tail=5")
    assert res.status == 200, res
    assert res.headers["content-type"].startswith("text/plain")
    assert res.headers["x-accel-buffering"] == "no"
    lines = res.body.decode().splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("frappe_docker-backend-1  | 20") and lines[0].endswith("Z line 295")
    assert lines[-1].endswith(" line 299")
    argv = logs_argvs(world)[-1]
    assert argv[argv.index("logs") :] == ["logs", "--no-color", "--timestamps", "--tail", "5", "backend"]
    assert "--project-directory" in argv


def test_tail_defaults_to_200(client, world):
    world.doubles.write_log(world.compose_project, "backend", *(f"line {i}" for i in range(300)))
    res = client.get("/stacks/prod/logs", query="service=backend")
    assert res.status == 200 and len(res.body.decode().splitlines()) == 200
    assert logs_argvs(world)[-1][-3:] == ["--tail", "200", "backend"]


def test_fm_logs_include_the_workers_compose_file_so_workers_are_found(client, world):
    world.doubles.write_log(world.fm_project, "short-worker", "job done")
    res = client.get("/stacks/erp/logs", query="service=short-worker&tail=10")
    assert res.status == 200, res
    assert res.body.decode().strip().endswith("job done")
    argv = logs_argvs(world)[-1]
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    assert files == [str(world.bench_path / "docker-compose.yml"), str(world.bench_path / "docker-compose.workers.yml")]


def test_a_line_holding_a_secret_is_redacted(client, world):
    world.doubles.write_log(
        world.compose_project, "backend", "DB_PASSWORD=hunter2", f"calling with {TEST_TOKEN}", "all good"
    )
    body = client.get("/stacks/prod/logs", query="service=backend").body.decode()
    assert "hunter2" not in body and TEST_TOKEN not in body
    assert "DB_PASSWORD=***" in body and "all good" in body


@pytest.mark.parametrize(
    "query, fragment",
    [
        ("service=nope", "has no service 'nope'"),
        ("", "Name the service"),
        ("service=backend&tail=0", "tail must be"),
        ("service=backend&tail=5001", "tail must be"),
        ("service=backend&tail=ten", "tail must be"),
        ("service=backend&follow=yes", "follow must be"),
    ],
)
def test_bad_requests_are_400_and_start_nothing(client, world, query, fragment):
    res = client.get("/stacks/prod/logs", query=query)
    assert res.status == 400, res
    assert fragment in res.json()["message"]
    assert logs_argvs(world) == []


def test_the_400_for_an_unknown_service_lists_the_services(client):
    message = client.get("/stacks/prod/logs", query="service=nope").json()["message"]
    assert "backend" in message and "queue-long" in message


def test_unknown_stack_is_404(client):
    assert client.get("/stacks/nope/logs", query="service=backend").status == 404


def test_logs_need_the_token(client):
    assert client.get("/stacks/prod/logs", query="service=backend", token=None).status == 401


# ---------------------------------------------------------------------- a real agent process


def Stream(port: int, path: str) -> LineStream:
    """A followed log read from the agent over a real socket."""
    return LineStream(port, path, AUTH)


def live(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def follow_pids(world) -> list[int]:
    return [c["pid"] for c in world.doubles.invocations("docker") if "logs" in c["argv"] and "--follow" in c["argv"]]


def test_followed_lines_arrive_and_the_child_dies_when_the_client_goes(world, agent_process):
    agent = agent_process()
    world.doubles.write_log(world.compose_project, "backend", "before")
    stream = Stream(agent.port, "/stacks/prod/logs?service=backend&follow=1&tail=10")
    try:
        assert stream.resp.status == 200
        wait_for(lambda: any(line.endswith(" before") for line in stream.lines), 10, "the tail")
        world.doubles.write_log(world.compose_project, "backend", "fresh line", "secret: s3cr3t")
        wait_for(lambda: any(line.endswith(" fresh line") for line in stream.lines), 10, "a new line")
        wait_for(lambda: any(line.endswith(" secret: ***") for line in stream.lines), 10, "the redacted line")
        assert not any("s3cr3t" in line for line in stream.lines)
        [pid] = follow_pids(world)
        assert live(pid)
    finally:
        stream.close()
    # The contract: the `docker compose logs` child is gone within 2 s of the client.
    wait_for(lambda: not live(pid), 2.0, "the logs child to be killed")


def test_stopping_the_agent_kills_the_children_of_open_streams(world, agent_process):
    # Each child runs in its own process group, so it would outlive an agent that just exited.
    agent = agent_process()
    stream = Stream(agent.port, "/stacks/prod/logs?service=backend&follow=1&tail=10")
    try:
        assert stream.resp.status == 200
        wait_for(lambda: len(follow_pids(world)) == 1, 10, "the logs child to start")
        [pid] = follow_pids(world)
        assert agent.stop() == 0
    finally:
        stream.close()
    wait_for(lambda: not live(pid), 2.0, "the logs child to be killed with the agent")


def test_the_stream_limit_holds_and_recovers(world, agent_process):
    world.write_config(agent={"max_log_streams": 2})
    agent = agent_process()
    path = "/stacks/prod/logs?service=backend&follow=1"
    first, second = Stream(agent.port, path), Stream(agent.port, path)
    try:
        assert (first.resp.status, second.resp.status) == (200, 200)
        third = Stream(agent.port, path)
        assert third.resp.status == 429
        assert int(third.resp.getheader("Retry-After")) > 0
        assert "max_log_streams" in third.resp.read().decode()
        third.close()
        # A log without --follow is not limited.
        assert agent.request("GET", "/stacks/prod/logs?service=backend&tail=1")[0] == 200
        first.close()

        def reopened():
            stream = Stream(agent.port, path)
            if stream.resp.status == 200:
                return stream
            stream.close()
            return None

        fourth = wait_for(reopened, 10, "a free stream slot after one closed")
        fourth.close()
    finally:
        first.close()
        second.close()
    wait_for(lambda: not any(live(pid) for pid in follow_pids(world)), 5, "every logs child to end")


def test_a_log_that_ends_ends_the_stream_and_leaves_no_child(world, agent_process):
    agent = agent_process()
    world.doubles.write_log(world.compose_project, "backend", *(f"line {i}" for i in range(50)))
    status, _ = agent.request("GET", "/")
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    conn.request("GET", "/stacks/prod/logs?service=backend&tail=50", headers=AUTH)
    body = conn.getresponse().read().decode()
    conn.close()
    assert len(body.splitlines()) == 50
    pids = [c["pid"] for c in world.doubles.invocations("docker") if "logs" in c["argv"]]
    assert pids and not any(live(pid) for pid in pids)
    assert os.path.exists(agent.log_path)
