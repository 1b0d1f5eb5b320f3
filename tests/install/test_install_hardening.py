"""install.sh --root DIR on hosts a review found unsafe or a new user found confusing: who the agent
runs as, other nginx sites, a missing compose plugin, rootless docker, first schedules, and the
upgrade of an install made by the previous installer (sockets, units, nginx) that keeps its config."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from install_harness import install_env, previous_installer, run_install

from fmappliance.config import load_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: FM homes of other users are planted")

NOBODY = pwd.getpwnam("nobody")


def fm_home(base: Path, bench: str, owner: int = 0) -> Path:
    (base / "frappe" / "sites" / bench).mkdir(parents=True)
    (base / "frappe" / "sites" / bench / "docker-compose.yml").write_text("services: {}\n")
    for path in [base, *base.rglob("*")]:
        os.chown(path, owner, owner)
    return base / "frappe"


def unit_user(root: Path) -> str:
    return re.search(r"^User=(.*)$", (root / "etc/systemd/system/fm-agent.service").read_text(), re.M).group(1)


def test_fm_homes_of_two_users_stop_the_install_until_fm_agent_user_chooses_and_the_choice_is_kept(dist, tmp_path):
    homes = tmp_path / "homes"
    ours = fm_home(homes / "ops", "erp")
    fm_home(homes / "mallory", "planted", owner=NOBODY.pw_uid)
    env = install_env(dist, FM_SEARCH_HOMES=f"{homes}/*")
    root = tmp_path / "root"

    refused = run_install(root, env=env)
    assert refused.returncode != 0
    assert "several users" in refused.stderr and "FM_AGENT_USER=<user>" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (root / "etc/fmappliance/config.yaml").exists()

    chosen = run_install(root, env={**env, "FM_AGENT_USER": "root"})
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    assert load_config(root / "etc/fmappliance/config.yaml")["stacks"] == {
        "erp": {
            "type": "fm",
            "path": f"{ours}/sites/erp",
            "project": None,
            "files": [],
            "service": "backend",
            "db_service": "db",
            "sites": [],
        }
    }
    assert "belongs to nobody" in chosen.stdout, "the planted bench is reported as skipped"
    assert unit_user(root) == "root"
    assert "agent-user root" in (root / "opt/fmappliance/install-record").read_text().splitlines()

    # Later runs keep the first choice; the planted home cannot make them stop or switch.
    again = run_install(root, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "kept from the first install" in again.stdout and unit_user(root) == "root"
    assert "belongs to nobody" not in again.stdout, "stacks are discovered for a new config only"

    switched = run_install(root, env={**env, "FM_AGENT_USER": "nobody"})
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert unit_user(root) == "nobody"
    assert "the agent now runs as nobody instead of root" in switched.stdout
    record = (root / "opt/fmappliance/install-record").read_text().splitlines()
    assert [line for line in record if line.startswith("agent-user ")] == ["agent-user nobody"]


def test_a_lone_fm_home_of_a_user_outside_the_docker_group_is_not_trusted_with_docker(dist, tmp_path):
    homes = tmp_path / "homes"
    fm_home(homes / "mallory", "planted", owner=NOBODY.pw_uid)
    proc = run_install(tmp_path / "root", env=install_env(dist, FM_SEARCH_HOMES=f"{homes}/*"))
    assert proc.returncode != 0
    assert "not allowed to use docker" in proc.stderr and "FM_AGENT_USER=nobody" in proc.stderr


def test_a_first_install_schedules_daily_backups_of_every_stack_and_says_so(dist, tmp_path):
    homes = tmp_path / "homes"
    fm_home(homes / "ops", "erp")
    root = tmp_path / "root"
    proc = run_install(root, env=install_env(dist, FM_SEARCH_HOMES=f"{homes}/*", FM_AGENT_USER="root"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    schedules = load_config(root / "etc/fmappliance/config.yaml")["schedules"]
    assert [(s["stack"], s["site"], s["frequency"], s["time"]) for s in schedules] == [("erp", "*", "daily", "02:00")]
    summary = proc.stdout.split("== Done", 1)[1]
    assert "every discovered stack is backed up daily at 02:00 (server time)" in summary


def test_accel_is_the_default_only_when_nginx_serves_nothing_else(dist, tmp_path):
    env = install_env(dist)
    alone = tmp_path / "alone"
    (alone / "etc/nginx/sites-enabled").mkdir(parents=True)
    (alone / "etc/nginx/sites-enabled/default").write_text("server {\n    listen 80 default_server;\n}\n")
    proc = run_install(alone, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_config(alone / "etc/fmappliance/config.yaml")["dashboard"]["download_mode"] == "accel"

    shared = tmp_path / "shared"
    (shared / "etc/nginx/sites-enabled").mkdir(parents=True)
    (shared / "etc/nginx/sites-enabled/shop").write_text("server {\n    root /var/www/shop;\n}\n")
    proc = run_install(shared, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_config(shared / "etc/fmappliance/config.yaml")["dashboard"]["download_mode"] == "stream"
    summary = proc.stdout.split("== Done", 1)[1]
    assert "download_mode stream: this nginx serves other sites (/etc/nginx/sites-enabled/shop)" in summary
    assert "could read every backup" in summary


@pytest.mark.parametrize(
    "answer,status",
    [
        ("docker: 'compose' is not a docker command.\nSee 'docker --help'", 1),
        ("unknown shorthand flag: 'p' in -p", 125),
    ],
)
def test_a_docker_without_the_compose_plugin_is_named_in_the_checks(dist, tmp_path, answer, status):
    """Both shapes of Docker CLI 27 without the plugin (issue 20, item 2)."""
    docker = tmp_path / "docker"
    docker.write_text(f"#!/bin/sh\nprintf '%s\\n' \"{answer}\" >&2\nexit {status}\n")
    docker.chmod(0o755)
    proc = run_install(tmp_path / "root", env=install_env(dist, FM_DOCKER=str(docker)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "docker compose is not available: install the docker compose plugin" in proc.stderr
    assert "docker compose is not available" in proc.stdout.split("== Done", 1)[1]


def listen_as(path: Path, exe: str, uid: int) -> subprocess.Popen:
    script = (
        "import socket,sys\ns=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
        "print('ready', flush=True)\nwhile True:\n    c,_=s.accept(); c.close()\n"
    )
    proc = subprocess.Popen([exe, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, user=uid, group=uid)
    assert proc.stdout.readline().strip() == "ready"
    return proc


OPEN_PYTHON = os.path.realpath("/usr/bin/python3") if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def open_dir():
    path = Path(tempfile.mkdtemp(prefix="fm-rootless-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_planted_rootless_socket_and_fm_home_do_not_make_a_user_the_agent(dist, tmp_path, open_dir):
    """Issue 21, item 1, as reproduced: nobody's socket + ~/frappe/sites/x/docker-compose.yml."""
    homes = tmp_path / "homes"
    fm_home(homes / "mallory", "x", owner=NOBODY.pw_uid)
    (open_dir / str(NOBODY.pw_uid)).mkdir()
    os.chown(open_dir / str(NOBODY.pw_uid), NOBODY.pw_uid, NOBODY.pw_uid)
    planted = listen_as(open_dir / str(NOBODY.pw_uid) / "docker.sock", OPEN_PYTHON, NOBODY.pw_uid)
    try:
        env = install_env(dist, FM_SEARCH_HOMES=f"{homes}/*", FM_USER_RUNTIME_BASE=str(open_dir))
        proc = run_install(tmp_path / "root", env=env)
        assert proc.returncode != 0
        assert "seems to run a rootless docker" in proc.stderr and "FM_AGENT_USER=nobody" in proc.stderr
        assert not (tmp_path / "root/etc/systemd/system/fm-agent.service").exists()
        named = run_install(tmp_path / "root", env={**env, "FM_AGENT_USER": "nobody"})
        assert named.returncode != 0 and "not a rootless docker daemon of nobody" in named.stderr
        assert not (tmp_path / "root/etc/systemd/system/fm-agent.service").exists()
    finally:
        planted.kill()
        planted.wait()


def test_a_rootless_docker_of_an_explicit_agent_user_is_set_in_the_unit(dist, tmp_path, open_dir):
    base = open_dir / "run-user"
    (base / "0").mkdir(parents=True)
    env = install_env(dist, FM_AGENT_USER="root", FM_USER_RUNTIME_BASE=str(base))
    plain = run_install(tmp_path / "plain", env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "DOCKER_HOST" not in (tmp_path / "plain/etc/systemd/system/fm-agent.service").read_text()

    dockerd = open_dir / "dockerd"
    dockerd.write_bytes(Path(OPEN_PYTHON).read_bytes())
    dockerd.chmod(0o755)
    daemon = listen_as(base / "0" / "docker.sock", str(dockerd), 0)
    try:
        proc = run_install(tmp_path / "rootless", env=env)
    finally:
        daemon.kill()
        daemon.wait()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = (tmp_path / "rootless/etc/systemd/system/fm-agent.service").read_text()
    assert f"\nEnvironment=DOCKER_HOST=unix://{base}/0/docker.sock\n" in unit
    assert f"\nEnvironment=XDG_RUNTIME_DIR={base}/0\n" in unit
    assert "docker" not in re.search(r"^SupplementaryGroups=(.*)$", unit, re.M).group(1)


def previous_install_sh(tmp_path: Path) -> Path:
    path = previous_installer(tmp_path / "previous")
    if path is None:
        pytest.skip("not a git checkout with the previous installer's commit")
    return path


def test_rerunning_the_installer_upgrades_an_install_of_the_previous_one_keeping_config_users_schedules_and_backups(
    dist, tmp_path
):
    homes = tmp_path / "homes"
    fm_home(homes / "ops", "erp")
    # The previous installer chose root on its own; this one wants that said (FM_AGENT_USER=root).
    env = install_env(dist, FM_SEARCH_HOMES=f"{homes}/*", FM_AGENT_USER="root")
    root = tmp_path / "root"
    old = subprocess.run(
        ["bash", str(previous_installer(tmp_path)), "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert old.returncode == 0, old.stdout + old.stderr
    config_path = root / "etc/fmappliance/config.yaml"
    # What an operator did since: a second user, a schedule, a backup.
    data = yaml.safe_load(config_path.read_text())
    data["dashboard"]["credentials"]["ops"] = data["dashboard"]["credentials"]["admin"]
    config_path.write_text(
        config_path.read_text().replace(
            "  credentials:\n", f'  credentials:\n    ops: "{data["dashboard"]["credentials"]["admin"]}"\n'
        )
        + 'schedules:\n  - stack: erp\n    site: "*"\n    time: "03:30"\n'
    )
    before = load_config(config_path)
    assert before["agent"]["socket"] == "" and before["dashboard"]["socket"] == "", "the old install is on TCP"
    backup = root / "var/backups/fmappliance/erp/erp.localhost/2026-01-01_02-00-00.sql.gz"
    backup.parent.mkdir(parents=True)
    backup.write_bytes(b"dump")

    untouched = config_path.read_text()
    dry = run_install(root, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would move agent dashboard of /etc/fmappliance/config.yaml from TCP to Unix sockets" in dry.stdout
    assert config_path.read_text() == untouched and not (root / "etc/fmappliance/config.yaml.pre-sockets").exists()

    new = run_install(root, env=env)
    assert new.returncode == 0, new.stdout + new.stderr
    after = load_config(config_path)
    assert after["agent"]["socket"] == "/run/fm-agent/agent.sock" and after["agent"]["socket_group"] == "fmappliance"
    assert after["dashboard"]["socket"] == "/run/fm-dashboard/dashboard.sock"
    assert after["dashboard"]["socket_group"] == "fmappliance-web"
    # nginx's proxy secret: written, and the old config points the dashboard at it (issue 21, item 12).
    assert after["dashboard"]["proxy_secret_file"] == "/etc/fmappliance/proxy-secret"
    secret = (root / "etc/fmappliance/proxy-secret").read_text().strip()
    assert len(secret) >= 32 and secret in (root / "etc/nginx/snippets/fm-proxy-secret.conf").read_text()
    assert after["dashboard"]["credentials"] == before["dashboard"]["credentials"]
    assert set(after["dashboard"]["credentials"]) == {"admin", "ops"}
    assert after["schedules"] == before["schedules"] and after["stacks"] == before["stacks"]
    assert after["security"]["token"] == before["security"]["token"]
    assert after["dashboard"]["secret_key"] == before["dashboard"]["secret_key"]
    assert backup.read_bytes() == b"dump"
    assert (root / "etc/fmappliance/config.yaml.pre-sockets").is_file()
    site = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
    assert "server unix:/run/fm-dashboard/dashboard.sock;" in site
    assert "proxy_request_buffering off" not in site and "limit_except GET HEAD" in site
    assert "RuntimeDirectory=fm-agent" in (root / "etc/systemd/system/fm-agent.service").read_text()
    assert "agent-user root" in (root / "opt/fmappliance/install-record").read_text().splitlines()
    summary = new.stdout.split("== Done", 1)[1]
    assert "upgrade: agent dashboard now listen on Unix sockets" in summary
    assert "Upgraded from an earlier version" in summary
    assert "Password:" not in new.stdout

    # And a run after that changes nothing.
    again = run_install(root, env=env)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout


def test_the_docker_the_installer_checked_is_the_one_the_agent_runs_and_fmx_is_preferred(dist, tmp_path):
    """Issue 20, item 1: docker outside the default PATH; fm 0.20's fmx beside fm."""
    odd = tmp_path / "opt" / "odd" / "bin"
    odd.mkdir(parents=True)
    (odd / "docker").write_text("#!/bin/sh\n[ \"$2\" = ls ] && echo '[]'\nexit 0\n")
    (odd / "docker").chmod(0o755)
    fm_dir = tmp_path / "fm-bin"
    fm_dir.mkdir()
    for name in ("fm", "fmx"):
        (fm_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (fm_dir / name).chmod(0o755)
    env = install_env(dist, FM_DOCKER=str(odd / "docker"), PATH=f"{fm_dir}:{os.environ['PATH']}")
    root = tmp_path / "root"
    proc = run_install(root, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config_path = root / "etc/fmappliance/config.yaml"
    agent = load_config(config_path)["agent"]
    assert agent["docker_binary"] == str(odd / "docker")
    assert agent["fm_binary"] == str(fm_dir / "fmx")
    assert "WARNING: the agent would run docker" not in proc.stdout

    # A config that names no docker (older installs): the agent would run another (or none), the summary says so.
    config_path.write_text(config_path.read_text().replace(f'  docker_binary: "{odd}/docker"\n', ""))
    again = run_install(root, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    summary = again.stdout.split("== Done", 1)[1]
    assert "WARNING: the agent would run docker " in summary and f"but the installer checked {odd}/docker" in summary
    assert f'set agent.docker_binary: "{odd}/docker" in /etc/fmappliance/config.yaml' in summary
