"""Issue 20, item 1: fm looks docker up on its own PATH, so the agent puts the directory of the
configured ``agent.docker_binary`` first on the PATH it gives fm (a docker outside the default PATH)."""

from __future__ import annotations

import os

from fmappliance.agent.runner import minimal_env, put_first_on_path


def test_the_configured_dockers_directory_comes_first_on_the_path_commands_get(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin:/opt/odd/bin")
    put_first_on_path("/opt/odd/bin/docker")
    assert minimal_env()["PATH"] == "/opt/odd/bin:/usr/local/bin:/usr/bin:/bin"
    put_first_on_path("docker")  # a bare name: looked up on PATH as it is, nothing changes
    assert minimal_env()["PATH"] == "/opt/odd/bin:/usr/local/bin:/usr/bin:/bin"


def test_fm_finds_the_configured_docker_not_another_one_on_the_agents_path(world, agent_process, monkeypatch, tmp_path):
    # Another docker earlier on the agent's PATH, as on the reported host; it is not the one configured.
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "docker").write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    (decoy / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{decoy}:/usr/local/bin:/usr/bin:/bin")
    # fm that, like the real one, runs whatever `docker` its PATH gives it.
    fm = tmp_path / "fm-bin" / "fm"
    fm.parent.mkdir()
    fm.write_text(
        "#!/bin/sh\n"
        f'[ "$(command -v docker)" = "{world.docker}" ] || {{ echo "Docker daemon not running" >&2; exit 1; }}\n'
        f'exec "{world.fm}" "$@"\n'
    )
    fm.chmod(0o755)
    world.write_config(agent={"fm_binary": str(fm)})
    agent = agent_process()
    status, body = agent.request("POST", "/action", {"action": "restart_stack", "stack": "erp"})
    assert status == 202, body
    done = agent.wait_job(body["job"]["id"])
    assert done["status"] == "succeeded", done
    assert os.path.dirname(world.docker) not in os.environ["PATH"].split(os.pathsep)
