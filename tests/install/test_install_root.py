"""install.sh --root DIR: every file the appliance needs, right modes, idempotent, clean uninstall."""

from __future__ import annotations

import grp
import json
import os
import re
import stat
import subprocess
import sys

import bcrypt
import pytest
from install_harness import INSTALL_SH, REPO, install_env, run_install, tree_hashes

from fmappliance.config import load_config

EXPECTED_MODES = {
    "opt/fmappliance/fm-agent.pyz": 0o755,
    "opt/fmappliance/fm-dashboard.pyz": 0o755,
    "opt/fmappliance/uninstall.sh": 0o755,
    "opt/fmappliance/install.sh": 0o755,
    "etc/fmappliance": 0o750,
    "etc/fmappliance/config.yaml": 0o640,
    "etc/fmappliance/proxy-secret": 0o640,  # root:<dashboard user>: the dashboard's copy of nginx's secret
    "etc/nginx/snippets/fm-proxy-secret.conf": 0o600,  # root only (nginx reads its config as root)
    "etc/fmappliance/tls/selfsigned.key": 0o600,
    "etc/systemd/system/fm-agent.service": 0o644,
    "etc/systemd/system/fm-dashboard.service": 0o644,
    "etc/nginx/sites-available/fm-dashboard.conf": 0o644,
    "etc/nginx/snippets/fm-security-headers.conf": 0o644,
    "etc/nginx/snippets/fm-tls.conf": 0o644,
    "var/lib/fmappliance": 0o750,
    "var/lib/fmappliance/agent": 0o750,
    "var/lib/fmappliance/dashboard": 0o750,
    "var/backups/fmappliance": 0o750,
}


def make_host(tmp_path):
    """A fake host to discover: one FM home with a bench, compose projects (frappe_docker and not)."""
    home = tmp_path / "homes" / "frappeuser" / "frappe"
    bench = home / "sites" / "erp.example.com"
    bench.mkdir(parents=True)
    (bench / "docker-compose.yml").write_text(
        "services:\n  frappe:\n    image: ghcr.io/rtcamp/frappe-manager-frappe:v0.20\n"
    )
    frappe_docker = tmp_path / "srv" / "frappe_docker"
    frappe_docker.mkdir(parents=True)
    (frappe_docker / "compose.yaml").write_text(
        "services:\n  backend:\n    image: frappe/erpnext:v15.20.0\n  frontend:\n    image: frappe/erpnext:v15.20.0\n"
    )
    (frappe_docker / "overrides.yaml").write_text("services:\n  db:\n    image: mariadb:10.6\n")
    other = tmp_path / "srv" / "nextcloud"
    other.mkdir(parents=True)
    (other / "compose.yaml").write_text("services:\n  app:\n    image: nextcloud:29\n")
    projects = [
        {
            "Name": "frappe_docker",
            "Status": "running(9)",
            "ConfigFiles": f"{frappe_docker}/compose.yaml,{frappe_docker}/overrides.yaml",
        },
        {"Name": "nextcloud", "Status": "running(2)", "ConfigFiles": f"{other}/compose.yaml"},
        {"Name": "erpexamplecom", "Status": "running(8)", "ConfigFiles": f"{bench}/docker-compose.yml"},
    ]
    docker = tmp_path / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(
        "#!/bin/sh\n[ \"$1 $2\" = 'compose ls' ] || exit 1\ncat <<'EOF'\n" + json.dumps(projects) + "\nEOF\n"
    )
    docker.chmod(0o755)
    return {"home": home, "bench": bench, "frappe_docker": frappe_docker, "docker": docker}


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    return make_host(tmp_path_factory.mktemp("host"))


@pytest.fixture(scope="module")
def env(dist, host):
    # The FM home is root's: root runs the agent only when named (issue 21, item 4).
    return install_env(
        dist, FM_SEARCH_HOMES=str(host["home"].parent.parent / "*"), FM_DOCKER=str(host["docker"]), FM_AGENT_USER="root"
    )


@pytest.fixture(scope="module")
def first(tmp_path_factory, env):
    root = tmp_path_factory.mktemp("root")
    proc = run_install(root, "--http-port", "8080", "--https-port", "8443", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc


def printed_password(output: str) -> str:
    match = re.search(r"^\s*Password:\s+(\S+)\s*$", output, re.M)
    assert match, output
    return match.group(1)


def test_install_writes_every_file_with_its_mode(first):
    root, _ = first
    for rel, mode in EXPECTED_MODES.items():
        path = root / rel
        assert path.exists(), rel
        assert stat.S_IMODE(path.stat().st_mode) == mode, f"{rel}: {oct(path.stat().st_mode)}"
    link = root / "etc/nginx/sites-enabled/fm-dashboard.conf"
    assert os.readlink(link) == "/etc/nginx/sites-available/fm-dashboard.conf"


def test_config_is_owned_by_root_and_the_shared_group_where_it_exists(first):
    root, _ = first
    st = (root / "etc/fmappliance/config.yaml").stat()
    assert st.st_uid == os.getuid()
    try:
        assert st.st_gid == grp.getgrnam("fmappliance").gr_gid
    except KeyError:  # --root creates no groups: the installing user's group
        assert st.st_gid == os.getgid()


def test_zipapps_are_installed_byte_for_byte(first, dist):
    root, _ = first
    for name in ("fm-agent.pyz", "fm-dashboard.pyz"):
        assert (root / "opt/fmappliance" / name).read_bytes() == (dist / name).read_bytes()


def test_config_is_valid_with_random_secrets_and_only_a_bcrypt_hash_of_the_printed_password(first):
    root, proc = first
    path = root / "etc/fmappliance/config.yaml"
    config = load_config(path)
    password = printed_password(proc.stdout)
    assert len(password) >= 16
    stored = config["dashboard"]["credentials"]["admin"]
    assert bcrypt.checkpw(password.encode(), stored.encode())
    assert len(config["security"]["token"]) >= 32 and len(config["dashboard"]["secret_key"]) >= 32
    assert config["security"]["token"] != config["dashboard"]["secret_key"]
    assert config["dashboard"]["totp"] == "required"
    assert "two-factor enrollment (an authenticator app) follows at first sign-in" in proc.stdout
    assert config["dashboard"]["trusted_proxy"] == "127.0.0.1"
    assert config["dashboard"]["download_mode"] == "accel", "nginx sends downloads unless told otherwise"
    for rel, _ in tree_hashes(root).items():
        file = root / rel
        if file.is_file() and not file.is_symlink():
            assert password.encode() not in file.read_bytes(), f"plaintext password found in {rel}"


def test_stacks_are_discovered_from_fm_homes_and_frappe_docker_projects_only(first, host):
    root, _ = first
    stacks = load_config(root / "etc/fmappliance/config.yaml")["stacks"]
    assert stacks["erp.example.com"]["type"] == "fm"
    assert stacks["erp.example.com"]["path"] == str(host["bench"])
    assert stacks["frappe_docker"]["type"] == "compose"
    assert stacks["frappe_docker"]["path"] == str(host["frappe_docker"])
    assert stacks["frappe_docker"]["files"] == ["compose.yaml", "overrides.yaml"]
    assert set(stacks) == {"erp.example.com", "frappe_docker"}, (
        "nextcloud and the fm bench's own project are not stacks"
    )


def test_units_are_filled_in_for_the_discovered_agent_user_and_paths(first, host):
    root, _ = first
    agent = (root / "etc/systemd/system/fm-agent.service").read_text()
    dashboard = (root / "etc/systemd/system/fm-dashboard.service").read_text()
    assert not re.search(r"@[A-Z_]+@", agent + dashboard)
    owner = host["home"].owner()
    assert f"\nUser={owner}\n" in agent
    assert "ExecStart=/usr/bin/python3 /opt/fmappliance/fm-agent.pyz --config /etc/fmappliance/config.yaml" in agent
    rw = re.search(r"^ReadWritePaths=(.*)$", agent, re.M).group(1).split()
    assert {"-/var/backups/fmappliance", f"-{host['home']}", f"-{host['frappe_docker']}"} <= set(rw)
    assert "\nUser=fm-dashboard\n" in dashboard
    assert "docker" not in re.search(r"^SupplementaryGroups=(.*)$", dashboard, re.M).group(1)


def test_nginx_site_has_no_unfilled_placeholders_and_the_chosen_ports(first):
    root, _ = first
    site = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
    assert not re.search(r"@[A-Z_]+@", site)
    assert "listen 8080 default_server;" in site and "listen 8443 ssl" in site
    assert "return 308 https://$host:8443$request_uri;" in site
    assert "ssl_certificate /etc/fmappliance/tls/selfsigned.crt;" in site


def test_second_run_changes_nothing_and_prints_no_password(first, env):
    root, _ = first
    before = tree_hashes(root)
    proc = run_install(root, "--http-port", "8080", "--https-port", "8443", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing changed" in proc.stdout
    assert not re.search(r"^\s*(wrote|created|linked) ", proc.stdout, re.M), proc.stdout
    assert "Password:" not in proc.stdout
    assert tree_hashes(root) == before


def test_existing_config_is_never_overwritten_and_an_edit_restarts_the_services(first, env):
    root, _ = first
    config = root / "etc/fmappliance/config.yaml"
    edited = config.read_text() + "# edited by the operator\n"
    config.write_text(edited)
    proc = run_install(root, "--http-port", "8080", "--https-port", "8443", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert config.read_text() == edited
    assert "kept /etc/fmappliance/config.yaml" in proc.stdout
    assert "changed: the agent and the dashboard will be restarted" in proc.stdout


def test_a_changed_template_is_rewritten_and_reported(first, env, tmp_path):
    root, _ = first
    unit = root / "etc/systemd/system/fm-dashboard.service"
    original = unit.read_text()
    unit.write_text(original + "# stray edit\n")
    proc = run_install(root, "--http-port", "8080", "--https-port", "8443", env=env)
    assert proc.returncode == 0
    assert "wrote /etc/systemd/system/fm-dashboard.service" in proc.stdout
    assert "1 change(s) made" in proc.stdout
    assert unit.read_text() == original


def test_dry_run_on_a_new_root_writes_nothing_and_lists_the_changes(env, tmp_path):
    root = tmp_path / "fresh"
    proc = run_install(root, "--dry-run", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not root.exists()
    for change in (
        "would create /opt/fmappliance/fm-agent.pyz",
        "would create /etc/fmappliance/config.yaml",
        "would create /etc/systemd/system/fm-agent.service",
        "would create /etc/nginx/sites-available/fm-dashboard.conf",
        "skipped (--root): ufw",
    ):
        assert change in proc.stdout, change
    assert "Password:" not in proc.stdout


def test_dry_run_on_an_installed_root_touches_nothing(first, env):
    root, _ = first
    before = tree_hashes(root)
    proc = run_install(root, "--dry-run", "--http-port", "8080", "--https-port", "8443", env=env)
    assert proc.returncode == 0
    assert "dry run: 0 change(s) would be made" in proc.stdout
    assert tree_hashes(root) == before


def test_uninstall_leaves_only_config_and_backups_and_purge_removes_them(env, tmp_path):
    root = tmp_path / "root"
    assert run_install(root, env=env).returncode == 0
    backup = root / "var/backups/fmappliance/prod/site1/2026-01-01_02-00-00.sql.gz"
    backup.parent.mkdir(parents=True)
    backup.write_bytes(b"dump")
    proc = run_install(root, "--uninstall", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    left = set(tree_hashes(root))
    assert left == {
        "etc/fmappliance/config.yaml",
        "etc/fmappliance/proxy-secret",
        "etc/fmappliance/tls/selfsigned.crt",
        "etc/fmappliance/tls/selfsigned.key",
        "var/backups/fmappliance/prod/site1/2026-01-01_02-00-00.sql.gz",
    }
    # --purge says what it would delete and wants it confirmed (issue 20, item 7).
    kept = tree_hashes(root)
    for answer in ("", "yes\n"):
        refused = subprocess.run(
            ["bash", str(INSTALL_SH), "--root", str(root), "--uninstall", "--purge"],
            input=answer, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode != 0
        assert "1 backup file(s)" in refused.stdout and 'Type "purge"' in refused.stdout
        assert "nothing was removed" in refused.stderr and "--yes" in refused.stderr
        assert tree_hashes(root) == kept
    typed = subprocess.run(
        ["bash", str(INSTALL_SH), "--root", str(root), "--uninstall", "--purge"],
        input="purge\n", env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert tree_hashes(root) == {}
    assert run_install(root, env=env).returncode == 0
    proc = run_install(root, "--uninstall", "--purge", "--yes", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "backup file(s)" in proc.stdout
    assert tree_hashes(root) == {}


def test_reinstall_after_uninstall_keeps_the_config_and_its_credentials(env, tmp_path):
    root = tmp_path / "root"
    assert run_install(root, env=env).returncode == 0
    config = (root / "etc/fmappliance/config.yaml").read_text()
    assert run_install(root, "--uninstall", env=env).returncode == 0
    proc = run_install(root, env=env)
    assert proc.returncode == 0
    assert (root / "etc/fmappliance/config.yaml").read_text() == config
    assert "Password:" not in proc.stdout


def test_unknown_option_fails_with_a_hint(env, tmp_path):
    proc = run_install(tmp_path / "r", "--frobnicate", env=env)
    assert proc.returncode != 0
    assert "unknown option: --frobnicate" in proc.stderr


def test_install_script_is_shellcheck_clean_and_calls_main_last():
    proc = subprocess.run(["shellcheck", str(INSTALL_SH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    lines = INSTALL_SH.read_text().rstrip("\n").splitlines()
    assert lines[-1] == 'main "$@"'
    assert lines[1].startswith("#") and "set -euo pipefail" in INSTALL_SH.read_text()


def test_every_option_and_environment_variable_is_documented_in_the_header():
    text = INSTALL_SH.read_text()
    header = text.split("set -euo pipefail", 1)[0]
    options = set(re.findall(r"^\s+(--[a-z-]+)(?:=\*)?\)", text, re.M))
    assert options >= {
        "--dry-run",
        "--uninstall",
        "--purge",
        "--root",
        "--domain",
        "--email",
        "--http-port",
        "--https-port",
    }
    for option in options:
        assert option in header, option
    for var in set(re.findall(r"\$\{?(FM_[A-Z_]+|FRAPPE_MANAGER_HOME)", text)):
        assert var in header, var


def test_help_prints_the_header():
    proc = subprocess.run(["bash", str(INSTALL_SH), "--help"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0
    assert "--uninstall" in proc.stdout and "FM_AGENT_USER" in proc.stdout


def test_download_mode_accel_is_written_to_a_new_config_and_the_acl_step_reported(env, tmp_path):
    root = tmp_path / "root"
    proc = run_install(root, "--download-mode", "accel", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert load_config(root / "etc/fmappliance/config.yaml")["dashboard"]["download_mode"] == "accel"
    assert "skipped (--root): setfacl -R -m u:www-data:rX,d:u:www-data:rX /var/backups/fmappliance" in proc.stdout
    site = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
    assert "location /_protected_backups/ {\n        internal;\n        alias /var/backups/fmappliance/;" in site


def test_download_mode_must_be_stream_or_accel(env, tmp_path):
    proc = run_install(tmp_path / "r", "--download-mode", "sendfile", env=env)
    assert proc.returncode != 0
    assert "--download-mode is stream or accel" in proc.stderr


def test_zipapps_are_built_when_dist_has_none(env, tmp_path):
    empty = tmp_path / "dist"
    empty.mkdir()
    proc = run_install(tmp_path / "root", env={**env, "FM_DIST_DIR": str(empty), "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "has no zipapps: building them" in proc.stdout
    for name in ("fm-agent.pyz", "fm-dashboard.pyz"):
        assert (tmp_path / "root/opt/fmappliance" / name).read_bytes() == (empty / name).read_bytes()


def test_uninstall_dry_run_removes_nothing(env, tmp_path):
    root = tmp_path / "root"
    assert run_install(root, env=env).returncode == 0
    before = tree_hashes(root)
    proc = run_install(root, "--uninstall", "--purge", "--dry-run", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "would remove /opt/fmappliance/fm-agent.pyz" in proc.stdout
    assert "would remove /etc/fmappliance" in proc.stdout
    assert "  removed " not in proc.stdout
    assert tree_hashes(root) == before


def test_by_default_nginx_and_the_certificate_accept_the_hosts_addresses_and_loopback(env, tmp_path):
    """Issue 20, item 7: https://127.0.0.1/ got an empty reply (444); the summary's URL must be reachable."""
    plain = {k: v for k, v in env.items() if k != "FM_SERVER_NAMES"}
    root = tmp_path / "root"
    proc = run_install(root, env=plain)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
    names = next(n for n in re.findall(r"^    server_name (.+);$", site, re.M) if n != "_").split()
    host_v4 = [
        a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if ":" not in a
    ]
    host_v6 = [a for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split() if ":" in a]
    assert {"localhost", "127.0.0.1"} <= set(names)
    assert set(host_v4) <= set(names) and {f"[{a}]" for a in host_v6 if not a.startswith("fe80")} <= set(names)
    for name in names:
        assert re.search(rf"^    {re.escape(name)} 1;$", site, re.M), f"{name} is in the known-host map"
    if host_v4:
        # What a laptop can reach comes first: the URL the summary prints.
        assert names[0] == host_v4[0]
        assert f"Dashboard:     https://{host_v4[0]}/" in proc.stdout
    sans = subprocess.run(
        [
            "openssl",
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            str(root / "etc/fmappliance/tls/selfsigned.crt"),
        ],
        capture_output=True,
        text=True,
    ).stdout
    assert "IP Address:127.0.0.1" in sans and "DNS:localhost" in sans
    for address in host_v4:
        assert f"IP Address:{address}" in sans


def test_the_installers_own_build_uses_only_the_hashed_build_requirements(env, tmp_path):
    """Issue 20, item 6: no `make build` (which installs .[test,build]) and no test tools."""
    empty = tmp_path / "dist"
    empty.mkdir()
    clean = {k: v for k, v in env.items() if k != "PYTHON"}
    proc = run_install(tmp_path / "root", env={**clean, "FM_DIST_DIR": str(empty)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "build tools from" in proc.stdout and "build-requirements.lock (hashed; no test tools)" in proc.stdout
    assert (tmp_path / "root/opt/fmappliance/fm-agent.pyz").read_bytes() == (empty / "fm-agent.pyz").read_bytes()
    lock = (REPO / "packaging/build-requirements.lock").read_text()
    pinned = set(re.findall(r"^([A-Za-z0-9_.-]+)==", lock, re.M))
    assert pinned == {"shiv", "click", "pip", "setuptools", "wheel", "packaging"}, pinned
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:])


def test_fleet_hub_sets_listen_and_address_a_socket_unit_and_stays_a_hub_on_later_runs(env, tmp_path):
    root = tmp_path / "root"
    proc = run_install(
        root, "--fleet-hub", "--fleet-address", "hub.example.com:9443", "--fleet-allow", "10.0.0.0/8", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = load_config(root / "etc/fmappliance/config.yaml")
    assert (config["fleet"]["listen"], config["fleet"]["address"]) == ("0.0.0.0:9443", "hub.example.com:9443")
    socket_unit = (root / "etc/systemd/system/fm-dashboard-hub.socket").read_text()
    assert "ListenStream=9443\n" in socket_unit and "Service=fm-dashboard.service" in socket_unit
    assert "\nSockets=fm-dashboard-hub.socket\n" in (root / "etc/systemd/system/fm-dashboard.service").read_text()
    assert "skipped (--root): fm-dashboard --config /etc/fmappliance/config.yaml fleet init" in proc.stdout
    assert (root / "etc/fmappliance/fleet").is_dir()
    # A later run without the options: still a hub (the record keeps it), nothing changes.
    again = run_install(root, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "\nSockets=fm-dashboard-hub.socket\n" in (root / "etc/systemd/system/fm-dashboard.service").read_text()
    assert load_config(root / "etc/fmappliance/config.yaml")["fleet"]["address"] == "hub.example.com:9443"
    # Without --fleet-hub the dashboard unit names no socket.
    plain = tmp_path / "plain"
    assert run_install(plain, env=env).returncode == 0
    assert "Sockets=" not in (plain / "etc/systemd/system/fm-dashboard.service").read_text()
    assert not (plain / "etc/systemd/system/fm-dashboard-hub.socket").exists()


def test_fleet_options_say_what_is_missing(env, tmp_path):
    for args, sentence in (
        (["--fleet-hub"], "--fleet-hub needs --fleet-address HOST:PORT"),
        (["--fleet-hub", "--fleet-address", "hub:99999"], "is not a port"),
        (["--fleet-allow", "10.0.0.0/8"], "only go with --fleet-hub"),
        (["--fleet-hub", "--fleet-address", "hub:9443", "--fleet-allow", "any;rm"], "is not a network"),
    ):
        proc = run_install(tmp_path / "r", *args, env=env)
        assert proc.returncode != 0 and sentence in proc.stderr, (args, proc.stderr)


def test_agent_only_installs_the_agent_and_uplink_without_dashboard_nginx_or_inbound_port(env, tmp_path):
    root = tmp_path / "root"
    token = "FMJ1" + "a" * 64 + "::abcd1234." + "s" * 32
    proc = run_install(
        root, "--agent-only", "--join", "hub.example.com:9443", "--name", "erp-b", env={**env, "FM_JOIN_TOKEN": token}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert token not in proc.stdout + proc.stderr
    units = root / "etc/systemd/system"
    assert sorted(p.name for p in units.iterdir()) == ["fm-agent.service", "fm-uplink.service"]
    uplink = (units / "fm-uplink.service").read_text()
    assert "User=fm-uplink\nGroup=fmappliance-agent\n" in uplink
    assert "fm-agent.pyz uplink --dir /etc/fmappliance/fleet\n" in uplink and not re.search(r"@[A-Z_]+@", uplink)
    assert "fmappliance-agent" in (units / "fm-agent.service").read_text()  # the agent gives its socket to the group
    assert not (root / "opt/fmappliance/fm-dashboard.pyz").exists()
    assert not (root / "etc/nginx/sites-available/fm-dashboard.conf").exists()
    config = load_config(root / "etc/fmappliance/config.yaml")
    assert config["agent"]["socket_group"] == "fmappliance-agent"
    assert oct((root / "etc/fmappliance").stat().st_mode & 0o777) == "0o751"
    assert oct((root / "etc/fmappliance/config.yaml").stat().st_mode & 0o777) == "0o640"
    assert (root / "etc/fmappliance/fleet").is_dir()
    assert (
        "skipped (--root): fm-agent --config /etc/fmappliance/config.yaml fleet join hub.example.com:9443 "
        "--name erp-b --wait 0 (token from FM_JOIN_TOKEN)" in proc.stdout
    )
    assert "skipped (--root): systemctl enable --now fm-agent fm-uplink" in proc.stdout
    # A later run without the options stays agent-only.
    again = run_install(root, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (units / "fm-dashboard.service").exists()


def test_join_needs_agent_only_and_the_token_in_the_environment(env, tmp_path):
    for args, extra, sentence in (
        (["--join", "hub:9443"], {"FM_JOIN_TOKEN": "x"}, "--join and --name go with --agent-only"),
        (["--agent-only", "--join", "hub:9443"], {}, "--join needs the join token in FM_JOIN_TOKEN"),
        (["--agent-only", "--join", "hub"], {"FM_JOIN_TOKEN": "x"}, "--join needs HOST:PORT"),
        (["--agent-only", "--join", "hub:1", "--name", "Bad"], {"FM_JOIN_TOKEN": "x"}, "a server name is"),
        (["--agent-only", "--fleet-hub", "--fleet-address", "h:1"], {}, "exclude each other"),
    ):
        proc = run_install(
            tmp_path / "r", *args, env={**{k: v for k, v in env.items() if k != "FM_JOIN_TOKEN"}, **extra}
        )
        assert proc.returncode != 0 and sentence in proc.stderr, (args, proc.stderr)
