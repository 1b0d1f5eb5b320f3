"""The installer's Python helpers (fmappliance.installer), called directly: who the agent runs as,
which files it may trust, the config a first install writes and the move of old configs to sockets."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support.config_factory import TEST_PASSWORD_HASH

from fmappliance.config import load_config
from fmappliance.installer import discovery
from fmappliance.installer.config_writer import NewConfig, render_config
from fmappliance.installer.discovery import (
    InstallerStop,
    choose_agent_user,
    discover_stacks,
    find_fm_binary,
    find_fm_homes,
)
from fmappliance.installer.migrate import migrate_config
from fmappliance.installer.nginx_sites import other_sites
from fmappliance.installer.trust import untrusted_reason

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: files owned by other users are planted")

NOBODY = pwd.getpwnam("nobody")


def fm_home(base: Path, *benches: str, owner: int = 0) -> Path:
    home = base / "frappe"
    for bench in benches:
        (home / "sites" / bench).mkdir(parents=True)
        (home / "sites" / bench / "docker-compose.yml").write_text("services: {}\n")
    for path in [base, *base.rglob("*")]:
        os.chown(path, owner, owner)
    return home


# ------------------------------------------------------------------------------ trust


def test_a_file_is_trusted_only_when_nobody_else_can_change_it_or_a_directory_above_it(tmp_path):
    mine = tmp_path / "mine" / "compose.yaml"
    mine.parent.mkdir()
    mine.write_text("x")
    assert untrusted_reason(mine, None) is None, "root-owned, 0755 dirs below the sticky /tmp"

    os.chown(mine, NOBODY.pw_uid, -1)
    assert "belongs to nobody" in untrusted_reason(mine, None)
    assert untrusted_reason(mine, NOBODY.pw_uid) is None, "the agent user's own file"
    os.chown(mine, 0, -1)

    mine.parent.chmod(0o775)
    assert "is writable by the group" in untrusted_reason(mine, None)
    mine.parent.chmod(0o757)
    assert "writable by every user" in untrusted_reason(mine, None)
    mine.parent.chmod(0o755)
    mine.chmod(0o666)
    assert "writable by every user" in untrusted_reason(mine, None)


def test_a_symlink_is_judged_by_where_it_leads_too(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "fm").write_text("#!/bin/sh\n")
    os.chown(elsewhere, NOBODY.pw_uid, -1)
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "fm").symlink_to(elsewhere / "fm")
    assert "belongs to nobody" in untrusted_reason(link_dir / "fm", None)


# ------------------------------------------------------------------------------ the agent user


def test_homes_of_several_users_stop_the_installer_until_fm_agent_user_chooses(tmp_path):
    homes = [fm_home(tmp_path / "root-home", "a"), fm_home(tmp_path / "planted", "b", owner=NOBODY.pw_uid)]
    assert find_fm_homes(f"{tmp_path}/*") == sorted(str(h) for h in homes)
    with pytest.raises(InstallerStop, match="several users.*FM_AGENT_USER=<user>"):
        choose_agent_user([str(h) for h in homes])
    chosen = choose_agent_user([str(h) for h in homes], requested="root")
    assert (chosen.name, chosen.uid) == ("root", 0)


def test_the_first_choice_is_kept_on_later_runs_unless_fm_agent_user_asks_for_another(tmp_path):
    homes = [str(fm_home(tmp_path / "a", "a")), str(fm_home(tmp_path / "b", "b", owner=NOBODY.pw_uid))]
    kept = choose_agent_user(homes, recorded="root", recorded_explicit=True)
    assert kept.name == "root" and "kept from the first install" in kept.reason
    changed = choose_agent_user(homes, requested="nobody", recorded="root")
    assert changed.name == "nobody" and "changed from root" in changed.reason


def test_a_lone_owner_who_may_not_use_docker_is_not_made_root_equivalent(tmp_path, monkeypatch):
    home = str(fm_home(tmp_path / "planted", "b", owner=NOBODY.pw_uid))
    with pytest.raises(InstallerStop, match="not allowed to use docker.*FM_AGENT_USER=nobody"):
        choose_agent_user([home])
    chosen = choose_agent_user([])
    assert (chosen.name, chosen.add_to_docker_group) == ("fm-agent", True), "the installer's own user"
    monkeypatch.setattr(discovery, "may_use_docker", lambda user: user == "nobody")
    member = choose_agent_user([home])
    assert member.name == "nobody" and not member.add_to_docker_group, "a user it chose itself is never added"


def serve_socket(path: Path, exe: str, uid: int) -> subprocess.Popen:
    """A process running ``exe`` (a python) as ``uid`` that listens on ``path`` until killed."""
    script = (
        "import socket,sys,time\n"
        "s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8)\n"
        "print('ready', flush=True)\n"
        "while True:\n    c,_=s.accept(); c.close()\n"
    )
    proc = subprocess.Popen(
        [exe, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, user=uid, group=uid, extra_groups=[]
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


#: A python other users may run (the test's own may live in root's home).
OPEN_PYTHON = os.path.realpath("/usr/bin/python3") if os.path.exists("/usr/bin/python3") else sys.executable


@pytest.fixture
def open_dir():
    """A root-owned 0755 directory other users can reach (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="fm-rootless-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def runtime_dir(open_dir: Path, uid: int) -> Path:
    base = open_dir / "run-user"
    (base / str(uid)).mkdir(parents=True)
    os.chown(base / str(uid), uid, uid)
    return base


def test_a_socket_any_user_can_bind_does_not_make_them_the_agent_user(tmp_path, open_dir):
    """Issue 21, item 1: nobody plants an FM home and binds /run/user/<uid>/docker.sock."""
    home = str(fm_home(tmp_path / "planted", "x", owner=NOBODY.pw_uid))
    base = runtime_dir(open_dir, NOBODY.pw_uid)
    planted = serve_socket(base / str(NOBODY.pw_uid) / "docker.sock", OPEN_PYTHON, NOBODY.pw_uid)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fmappliance.installer", "discover", "--search", f"{tmp_path}/*",
             "--runtime-base", str(base), "--stacks-out", str(tmp_path / "stacks.json")],
            capture_output=True, text=True, timeout=60, env=dict(os.environ, FM_INSTALLER="./install.sh"),
        )  # fmt: skip
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "agent_user nobody" not in proc.stdout
        assert "seems to run a rootless docker" in proc.stderr and "FM_AGENT_USER=nobody" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, "one sentence, no traceback"
        with pytest.raises(InstallerStop, match="rootless"):
            choose_agent_user([home], runtime_base=str(base))
        # Named explicitly: the socket's peer is checked, and a plain python is not a docker daemon.
        with pytest.raises(InstallerStop, match=r"not a rootless docker daemon of nobody.*not dockerd or rootlesskit"):
            choose_agent_user([home], requested="nobody", runtime_base=str(base))
    finally:
        planted.kill()
        planted.wait()


def test_an_explicitly_named_rootless_docker_is_used_when_its_peer_is_a_root_owned_dockerd(tmp_path, open_dir):
    home = str(fm_home(tmp_path / "ops", "x", owner=NOBODY.pw_uid))
    base = runtime_dir(open_dir, NOBODY.pw_uid)
    bindir = open_dir / "usr-bin"
    bindir.mkdir()
    dockerd = bindir / "dockerd"  # a real program named dockerd, root's alone
    dockerd.write_bytes(Path(OPEN_PYTHON).read_bytes())
    dockerd.chmod(0o755)
    sock = base / str(NOBODY.pw_uid) / "docker.sock"
    daemon = serve_socket(sock, str(dockerd), NOBODY.pw_uid)
    try:
        chosen = choose_agent_user([home], requested="nobody", runtime_base=str(base))
        assert chosen.rootless_socket == str(sock) and not chosen.add_to_docker_group
        # Still never chosen on its own.
        with pytest.raises(InstallerStop, match="rootless"):
            choose_agent_user([home], runtime_base=str(base))
        # A dockerd someone else can change is no better than a plain process.
        os.chown(dockerd, NOBODY.pw_uid, -1)
        with pytest.raises(InstallerStop, match="belongs to nobody"):
            choose_agent_user([home], requested="nobody", runtime_base=str(base))
    finally:
        daemon.kill()
        daemon.wait()


def test_root_is_the_agent_user_only_when_fm_agent_user_names_it(tmp_path):
    home = str(fm_home(tmp_path / "root-home", "a"))
    with pytest.raises(InstallerStop, match="would run as root.*full rights.*FM_AGENT_USER=root"):
        choose_agent_user([home])
    with pytest.raises(InstallerStop, match="FM_AGENT_USER=root"):
        choose_agent_user([home], recorded="root")
    assert choose_agent_user([home], requested="root").name == "root"
    assert choose_agent_user([home], recorded="root", recorded_explicit=True).name == "root"


# ------------------------------------------------------------------------------ stacks and fm


def test_stacks_come_only_from_files_nobody_but_root_and_the_agent_user_can_change(tmp_path):
    ours = fm_home(tmp_path / "ours", "erp")
    theirs = fm_home(tmp_path / "theirs", "evil", owner=NOBODY.pw_uid)
    shared = tmp_path / "srv" / "frappe_docker"
    shared.mkdir(parents=True)
    (shared / "compose.yaml").write_text("services:\n  backend: {}\n  frontend: {}\n")
    shared.chmod(0o777)
    planted = tmp_path / "srv" / "other"
    planted.mkdir()
    (planted / "compose.yaml").write_text("services:\n  backend: {}\n  frontend: {}\n")
    os.chown(planted / "compose.yaml", NOBODY.pw_uid, -1)
    good = tmp_path / "srv" / "good"
    good.mkdir()
    (good / "compose.yaml").write_text("services:\n  backend: {}\n  frontend: {}\n")
    projects = [
        {"Name": name, "ConfigFiles": f"{path}/compose.yaml"}
        for name, path in (("shared", shared), ("planted", planted), ("good", good))
    ]
    found = discover_stacks([str(ours), str(theirs)], projects, agent_uid=0)
    assert found.stacks == {
        "erp": {"type": "fm", "path": f"{ours}/sites/erp"},
        "good": {"type": "compose", "path": str(good), "project": "good"},
    }
    notes = "\n".join(found.notes)
    assert f"skipped {theirs}/sites/evil/docker-compose.yml" in notes and "belongs to nobody" in notes
    assert "skipped compose project shared" in notes and "writable by every user" in notes
    assert "skipped compose project planted" in notes


def test_fm_is_looked_for_in_the_agent_users_home_only_and_two_candidates_need_fm_binary(tmp_path):
    agent = discovery.AgentUser("root", "test", 0, str(tmp_path / "agent-home"))
    ours = tmp_path / "agent-home" / ".local" / "bin" / "fm"
    ours.parent.mkdir(parents=True)
    ours.write_text("#!/bin/sh\n")
    ours.chmod(0o755)
    other = tmp_path / "other-home" / ".local" / "bin" / "fm"
    other.parent.mkdir(parents=True)
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    os.chown(other, NOBODY.pw_uid, -1)
    if any(os.path.exists(p) for p in ("/usr/local/bin/fm", "/usr/bin/fm")):
        pytest.skip("this host has a system-wide fm")
    assert find_fm_binary("", agent) == (str(ours), [])
    path, notes = find_fm_binary("", agent, on_path=str(other))
    assert path == str(ours) and "not using" in notes[0] and "belongs to nobody" in notes[0]
    second = tmp_path / "opt-fm"
    second.write_text("#!/bin/sh\n")
    second.chmod(0o755)
    with pytest.raises(InstallerStop, match="several fm commands.*FM_BINARY=<path>"):
        find_fm_binary("", agent, on_path=str(second))
    assert find_fm_binary(str(second), agent) == (str(second), [])
    with pytest.raises(InstallerStop, match="cannot be used: .*belongs to nobody"):
        find_fm_binary(str(other), agent)


# ------------------------------------------------------------------------------ the new config


def new_config(tmp_path: Path, stacks: dict) -> Path:
    new = NewConfig(
        state_dir=str(tmp_path / "state"),
        backups_dir=str(tmp_path / "backups"),
        agent_socket="/run/fm-agent/agent.sock",
        dashboard_socket="/run/fm-dashboard/dashboard.sock",
        agent_socket_group="fmappliance",
        dashboard_socket_group="fmappliance-web",
        download_mode="stream",
        stacks=stacks,
    )
    path = tmp_path / "config.yaml"
    path.write_text(render_config(new, TEST_PASSWORD_HASH, "t" * 48, "s" * 48))
    return path


def test_a_first_install_schedules_a_daily_0200_backup_of_every_site_of_every_stack(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config = load_config(
        new_config(
            tmp_path,
            {
                "a": {"type": "compose", "path": str(tmp_path / "a")},
                "b.example": {"type": "fm", "path": str(tmp_path / "b")},
            },
        )
    )
    assert [(s["stack"], s["site"], s["frequency"], s["time"], s["enabled"]) for s in config["schedules"]] == [
        ("a", "*", "daily", "02:00", True),
        ("b.example", "*", "daily", "02:00", True),
    ]
    assert config["agent"]["socket"] == "/run/fm-agent/agent.sock" and config["agent"]["socket_group"] == "fmappliance"
    assert config["dashboard"]["socket"] == "/run/fm-dashboard/dashboard.sock"
    assert config["dashboard"]["socket_group"] == "fmappliance-web"
    assert load_config(new_config(tmp_path, {}))["schedules"] == []


def test_the_zipapp_subcommands_are_the_ones_install_sh_calls(tmp_path):
    """write-config through the CLI: secrets made inside, the password only in its 0600 file."""
    stacks = tmp_path / "stacks.json"
    stacks.write_text("{}")
    out, password = tmp_path / "config.yaml", tmp_path / "password"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fmappliance.agent",
            "installer",
            "write-config",
            "--out",
            str(out),
            "--password-out",
            str(password),
            "--stacks",
            str(stacks),
            "--state-dir",
            str(tmp_path),
            "--backups-dir",
            str(tmp_path / "b"),
            "--agent-socket",
            "/run/a.sock",
            "--dashboard-socket",
            "/run/d.sock",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert oct(password.stat().st_mode & 0o777) == "0o600" and oct(out.stat().st_mode & 0o777) == "0o600"
    assert password.read_text().strip() not in out.read_text()
    assert load_config(out)["dashboard"]["credentials"]["admin"].startswith("$2b$12$")


def config_values(config: Path) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "fmappliance.agent", "installer", "config-values", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return dict((line + " ").split(" ", 1) for line in proc.stdout.splitlines())


def test_config_values_are_the_files_else_the_schemas_defaults(tmp_path):
    """What install.sh reads from a config (sockets, ports, fleet dir): a missing key is the schema's default."""
    from fmappliance.config import default

    none = config_values(tmp_path / "missing.yaml")
    for key in ("agent.socket", "dashboard.socket", "agent.port", "backups.base_path", "fleet.dir"):
        assert none[key].strip() == str(default(key)), key
    given = tmp_path / "config.yaml"
    given.write_text("agent:\n  port: 9200\ndashboard:\n  socket: /run/d/x.sock\nfleet:\n  dir: /srv/fleet\n")
    values = config_values(given)
    # A section naming its port and no socket stays on TCP (socket empty), as the services do.
    assert values["agent.socket"].strip() == "" and values["agent.port"].strip() == "9200"
    assert values["dashboard.socket"].strip() == "/run/d/x.sock"
    assert values["fleet.dir"].strip() == "/srv/fleet"
    # The socket directories the installer makes without systemd and removes on uninstall: its own
    # /run/fm-* only, never /run itself or another program's directory.
    assert none["agent.runtime_dir"].strip() == "/run/fm-agent"
    assert values["dashboard.runtime_dir"].strip() == "" and values["agent.runtime_dir"].strip() == ""
    for elsewhere in ("/run/agent.sock", "/run/user/fm-x/a.sock", "/var/run/fm-agent/a.sock", "/run/../etc/a.sock"):
        given.write_text(f"agent:\n  socket: {elsewhere}\n")
        assert config_values(given)["agent.runtime_dir"].strip() == "", elsewhere


# ------------------------------------------------------------------------------ migration


OLD_CONFIG = """# fmappliance configuration, generated by install.sh on 2026-01-01.
agent:
  listen: 127.0.0.1
  port: 9100
  state_dir: {state}/agent
security:
  token: "{token}"
stacks: {{}}
backups:
  base_path: {state}/backups
dashboard:
  listen: 127.0.0.1
  port: 8000
  state_dir: {state}/dashboard
  secret_key: "{token}"
  agent_url: http://127.0.0.1:9100
  trusted_proxy: 127.0.0.1
  # an operator's comment
  credentials:
    admin: "{hash}"
schedules:
  - stack: prod
    time: "03:30"
"""

SOCKETS = {
    "agent": ("/run/fm-agent/agent.sock", "fmappliance"),
    "dashboard": ("/run/fm-dashboard/dashboard.sock", "fmappliance-web"),
}


def test_an_installer_made_tcp_config_moves_to_the_sockets_keeping_everything_else(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_CONFIG.format(state=tmp_path, token="t" * 48, hash=TEST_PASSWORD_HASH))
    path.chmod(0o640)
    before = load_config(path)
    assert before["agent"]["socket"] == "" and before["dashboard"]["socket"] == ""
    assert migrate_config(str(path), SOCKETS) == ["agent", "dashboard"]
    after = load_config(path)
    assert after["agent"]["socket"] == "/run/fm-agent/agent.sock" and after["agent"]["socket_group"] == "fmappliance"
    assert after["dashboard"]["socket"] == "/run/fm-dashboard/dashboard.sock"
    for key in ("credentials", "secret_key", "state_dir"):
        assert after["dashboard"][key] == before["dashboard"][key]
    assert after["schedules"] == before["schedules"] and after["security"] == before["security"]
    assert "# an operator's comment" in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "config.yaml.pre-sockets").read_text() == OLD_CONFIG.format(
        state=tmp_path, token="t" * 48, hash=TEST_PASSWORD_HASH
    )
    assert migrate_config(str(path), SOCKETS) == [], "a second run changes nothing"


def test_an_explicit_tcp_setup_stays_on_tcp(tmp_path):
    path = tmp_path / "config.yaml"
    text = OLD_CONFIG.format(state=tmp_path, token="t" * 48, hash=TEST_PASSWORD_HASH)
    text = text.replace("  port: 9100\n", "  port: 9200\n").replace(
        "  listen: 127.0.0.1\n  port: 8000\n", '  listen: 127.0.0.1\n  socket: ""\n  port: 8000\n'
    )
    path.write_text(text)
    assert migrate_config(str(path), SOCKETS) == []
    assert path.read_text() == text and not (tmp_path / "config.yaml.pre-sockets").exists()


# ------------------------------------------------------------------------------ nginx


def test_other_nginx_sites_are_found_but_not_debians_stock_default_or_ours(tmp_path):
    nginx = tmp_path / "nginx"
    (nginx / "sites-enabled").mkdir(parents=True)
    (nginx / "conf.d").mkdir()
    (nginx / "nginx.conf").write_text("http {\n    include /etc/nginx/sites-enabled/*;\n}\n")
    (nginx / "sites-enabled" / "default").write_text("server {\n    listen 80 default_server;\n}\n")
    (nginx / "sites-enabled" / "fm-dashboard.conf").write_text("server {\n}\n")
    (nginx / "conf.d" / "gzip.conf").write_text("gzip on;\n")
    assert other_sites(str(nginx)) == []
    (nginx / "sites-enabled" / "shop").write_text("server {\n    root /var/www/shop;\n}\n")
    (nginx / "conf.d" / "wiki.conf").write_text("# a wiki\nserver {\n}\n")
    assert other_sites(str(nginx)) == [f"{nginx}/sites-enabled/shop", f"{nginx}/conf.d/wiki.conf"]


def test_healthz_answers_on_a_unix_socket(tmp_path):
    """The installer's wait for the dashboard works on its socket (a tiny stand-in server here)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    class UnixServer(http.server.HTTPServer):
        address_family = socket.AF_UNIX

        def server_bind(self):
            self.socket.bind(self.server_address)
            self.server_name, self.server_port = "localhost", 0

    path = str(tmp_path / "d.sock")
    server = UnixServer(path, Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        from fmappliance.installer.cli import main

        assert main(["healthz", "--socket", path]) == 0
        assert main(["healthz", "--socket", str(tmp_path / "none.sock")]) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_templates_keep_tagged_lines_only_when_switched_on_and_refuse_a_missing_value():
    from fmappliance.installer.templates import TemplateError, render

    template = "User=@USER@\n#@ROOTLESS Environment=DOCKER_HOST=@HOST@\n#@A,B both\n"
    assert render(template, set(), {"USER": "ops"}) == "User=ops\n"
    assert render(template, {"ROOTLESS", "A"}, {"USER": "ops", "HOST": "unix:///run/user/1000/docker.sock"}) == (
        "User=ops\nEnvironment=DOCKER_HOST=unix:///run/user/1000/docker.sock\n"
    )
    assert render(template, {"A", "B"}, {"USER": "ops"}) == "User=ops\nboth\n"
    with pytest.raises(TemplateError, match="no value for @USER@"):
        render(template, set(), {})


def test_a_missing_dashboard_key_is_added_once_keeping_comments_and_order(tmp_path):
    from fmappliance.installer.migrate import add_dashboard_key

    config = tmp_path / "config.yaml"
    text = "# mine\nagent:\n  port: 9100\ndashboard:\n    # comment kept\n    port: 8000\nstacks: {}\n"
    config.write_text(text)
    config.chmod(0o640)
    assert add_dashboard_key(str(config), "proxy_secret_file", "/etc/fmappliance/proxy-secret")
    assert config.read_text() == text.replace(
        "dashboard:\n", 'dashboard:\n    proxy_secret_file: "/etc/fmappliance/proxy-secret"  # added by install.sh\n'
    )
    assert config.stat().st_mode & 0o777 == 0o640
    assert not add_dashboard_key(str(config), "proxy_secret_file", "/elsewhere"), "present: left alone"
