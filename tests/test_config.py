"""The config schema: strict loading, one-line errors, documentation generated from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from support.config_factory import TEST_PASSWORD, TEST_TOKEN, write_config

from fmappliance import config as cfg
from fmappliance import config_docs

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return cfg.load_config(path)


def minimal(tmp_path: Path, **extra) -> str:
    stack_dir = tmp_path / "stack"
    stack_dir.mkdir(exist_ok=True)
    data = {
        "security": {"token": TEST_TOKEN},
        "stacks": {"prod": {"type": "compose", "path": str(stack_dir)}},
        "dashboard": {"secret_key": "k" * 40, "credentials": {"admin": "$2b$12$" + "a" * 53}},
    }
    data.update(extra)
    return yaml.safe_dump(data)


def test_minimal_config_gets_every_default(tmp_path):
    config = load(tmp_path, minimal(tmp_path))
    assert config["agent"]["port"] == 9100
    assert config["agent"]["listen"] == "127.0.0.1"
    assert config["dashboard"]["port"] == 8000
    assert config["backups"]["retention"] == {"daily": 7, "weekly": 4, "monthly": 12, "keep_last": 3}
    assert config["backups"]["keep_safety_days"] == 14
    assert config["security"]["allowed_actions"] == cfg.DEFAULT_ALLOWED_ACTIONS
    assert config["agent"]["action_timeouts"]["backup_site"] == 7200
    assert config["stacks"]["prod"]["service"] == "backend"
    assert config["scheduler"]["catchup_hours"] == 6
    assert config["notifications"]["events"] == [
        "backup_failed",
        "backup_missed",
        "update_failed",
        "restore_failed",
        "restore_test_failed",
        "offsite_failed",
        "offsite_check_failed",
    ]


def test_partial_action_timeouts_keep_the_other_defaults(tmp_path):
    config = load(tmp_path, minimal(tmp_path, agent={"action_timeouts": {"backup_site": 60}}))
    assert config["agent"]["action_timeouts"]["backup_site"] == 60
    assert config["agent"]["action_timeouts"]["update_stack"] == 3600


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"agent": {"port": "abc"}}, "agent.port: expected a whole number"),
        ({"agent": {"bogus": 1}}, "agent.bogus: unknown key"),
        ({"nonsense": {}}, "nonsense: unknown section"),
        ({"security": {"token": "short"}}, "security.token: expected a random token of at least 32"),
        ({"security": {"token": TEST_TOKEN, "allowed_actions": ["exec"]}}, "unknown action 'exec'"),
        ({"dashboard": {"secret_key": "k" * 40, "credentials": {"admin": TEST_PASSWORD}}}, "must be a bcrypt hash"),
        (
            {"stacks": {"prod": {"type": "compose", "path": "/does/not/exist"}}},
            "directory /does/not/exist does not exist",
        ),
        (
            {"stacks": {"prod": {"type": "kubernetes", "path": "/tmp"}}},
            "stacks.prod.type: expected one of: compose, fm",
        ),
        ({"stacks": {"a;b": {"type": "fm", "path": "/tmp"}}}, "bad name"),
        ({"backups": {"retention": {"daily": -1}}}, "retention.daily must be 0 or more"),
        ({"backups": {"retention": {"keep_last": -1}}}, "retention.keep_last must be 0 or more"),
        ({"backups": {"retention": {"hourly": 2}}}, "unknown retention setting 'hourly'"),
        ({"backups": {"keep_safety_days": -1}}, "backups.keep_safety_days"),
        ({"schedules": [{"stack": "prod", "time": "25:00"}]}, "schedules[0].time: expected a time HH:MM"),
    ],
)
def test_bad_configs_are_refused_with_one_line_naming_file_and_key(tmp_path, change, expected):
    with pytest.raises(cfg.ConfigError) as err:
        load(tmp_path, minimal(tmp_path, **change))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "config.yaml") + ": ")
    assert expected in message
    assert "\n" not in message


def test_error_names_the_yaml_line(tmp_path):
    text = minimal(tmp_path) + "agent:\n  port: 99999\n"
    with pytest.raises(cfg.ConfigError, match=r"line \d+: agent.port: expected a port number"):
        load(tmp_path, text)


@pytest.mark.parametrize("missing", ["security", "stacks", "dashboard"])
def test_required_sections_are_required(tmp_path, missing):
    data = yaml.safe_load(minimal(tmp_path))
    del data[missing]
    with pytest.raises(cfg.ConfigError, match=missing):
        load(tmp_path, yaml.safe_dump(data))


def test_secrets_never_appear_in_errors(tmp_path):
    secret = "s3cr3t-value-that-must-not-leak"
    with pytest.raises(cfg.ConfigError) as err:
        load(tmp_path, minimal(tmp_path, security={"token": ["a", secret]}))
    assert secret not in str(err.value)
    with pytest.raises(cfg.ConfigError) as err:
        load(tmp_path, minimal(tmp_path, security={"token": secret[:20]}))
    assert secret[:20] not in str(err.value)


def test_token_file_is_read_and_must_be_private(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TEST_TOKEN + "\n")
    os.chmod(token_file, 0o600)
    config = load(tmp_path, minimal(tmp_path, security={"token_file": str(token_file)}))
    assert config["security"]["token"] == TEST_TOKEN
    os.chmod(token_file, 0o644)
    with pytest.raises(cfg.ConfigError, match="must not be writable or readable by others"):
        load(tmp_path, minimal(tmp_path, security={"token_file": str(token_file)}))


def test_duplicate_keys_are_refused(tmp_path):
    with pytest.raises(cfg.ConfigError, match="duplicate key"):
        load(tmp_path, minimal(tmp_path) + "agent:\n  port: 1\nagent:\n  port: 2\n")


def test_every_key_is_documented():
    for dotted, key in config_docs.iter_keys():
        assert key.help.strip(), f"{dotted} has no help text"


def test_example_config_is_generated_from_the_schema():
    shipped = (ROOT / "packaging" / "config.example.yaml").read_text()
    assert shipped == config_docs.example_yaml(), "run `make example-config`"


def test_example_config_mentions_every_key():
    example = config_docs.example_yaml()
    # Optional keys of a stack or schedule entry are listed in an "Each entry's keys: a, b, c." comment.
    listed = {
        key.strip()
        for line in example.splitlines()
        if "Each entry's keys:" in line
        for key in line.split("keys:", 1)[1].strip().rstrip(".").split(",")
    }
    for dotted, _key in config_docs.iter_keys():
        leaf = dotted.split(".")[-1].replace("[]", "")
        assert f"{leaf}:" in example or leaf in listed, dotted


def test_example_config_validates_once_paths_exist(tmp_path):
    data = yaml.safe_load(config_docs.example_yaml())
    for stack in data["stacks"].values():
        stack["path"] = str(tmp_path)
    data["dashboard"]["credentials"] = {"admin": "$2b$12$" + "a" * 53}
    config = cfg.validate(data)
    assert set(config["stacks"]) == {"prod", "erp"}


def test_configuration_reference_is_current():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert config_docs.reference_markdown() in page, (
        "regenerate docs/configuration.md's reference from the schema (make docs)"
    )


def test_write_config_helper_writes_a_valid_config(tmp_path):
    assert cfg.load_config(write_config(tmp_path))["stacks"] == {}


def test_new_configs_listen_on_unix_sockets_and_configs_with_listen_or_port_keep_tcp(tmp_path):
    """Sockets by default; an existing install (its config names listen/port) keeps working on TCP."""
    from fmappliance.config import DEFAULT_AGENT_SOCKET, DEFAULT_DASHBOARD_SOCKET, ConfigError, validate

    def loaded(**sections):
        data = {"security": {"token": "t" * 40}, "stacks": {}, "dashboard": {"secret_key": "s" * 40, "credentials": {}}}
        for name, values in sections.items():
            data[name] = {**data.get(name, {}), **values}
        return validate(data)

    plain = loaded()
    assert plain["agent"]["socket"] == DEFAULT_AGENT_SOCKET
    assert plain["dashboard"]["socket"] == DEFAULT_DASHBOARD_SOCKET
    tcp = loaded(agent={"listen": "127.0.0.1", "port": 9100}, dashboard={"port": 8000})
    assert tcp["agent"]["socket"] == "" and tcp["dashboard"]["socket"] == ""
    both = loaded(agent={"port": 9100, "socket": "/run/x/agent.sock"})
    assert both["agent"]["socket"] == "/run/x/agent.sock"
    with pytest.raises(ConfigError, match="agent.socket: expected an absolute path"):
        loaded(agent={"socket": "agent.sock"})


def test_default_names_the_value_a_config_without_the_key_gets(tmp_path):
    """config.default("section.key") (the installer's source of defaults) agrees with loading."""
    config = load(tmp_path, minimal(tmp_path))
    # Given by the test, or filled from another key when left out.
    given = {("security", "token"), ("dashboard", "secret_key"), ("dashboard", "credentials")}
    given |= {("security", "fleet_allowed_actions")}
    checked = 0
    for spec in cfg.SCHEMA:
        if not isinstance(spec, cfg.Section):
            continue
        for key in spec.keys:
            if isinstance(key, cfg.Key) and (spec.name, key.name) not in given:
                assert cfg.default(f"{spec.name}.{key.name}") == config[spec.name][key.name], (spec.name, key.name)
                checked += 1
    assert checked >= 60
    assert cfg.default("agent.socket") == "/run/fm-agent/agent.sock"
    assert cfg.default("fleet.dir") == "/etc/fmappliance/fleet"
    # A copy: changing it changes no later answer.
    cfg.default("backups.retention")["daily"] = 99
    assert cfg.default("backups.retention")["daily"] == 7
    for unknown in ("agent.nope", "nope.port", "stacks.type", "agent", "agent.socket.x"):
        with pytest.raises(KeyError, match=unknown.replace(".", r"\.")):
            cfg.default(unknown)


def dashboard_with(**keys) -> dict:
    return {"secret_key": "k" * 40, "credentials": {"admin": "$2b$12$" + "a" * 53}, **keys}


def test_metrics_token_file_is_read_private_and_long_enough_and_masked_in_logs(tmp_path):
    token_file = tmp_path / "metrics.token"
    token_file.write_text("m" * 40 + "\n")
    os.chmod(token_file, 0o640)
    config = load(tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_token_file=str(token_file))))
    assert config["dashboard"]["metrics_token"] == "m" * 40
    assert "m" * 40 in cfg.secrets_of(config)
    token_file.write_text("short")
    with pytest.raises(cfg.ConfigError, match="dashboard.metrics_token_file: the file's token is too short"):
        load(tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_token_file=str(token_file))))
    token_file.write_text("m" * 40)
    os.chmod(token_file, 0o644)
    with pytest.raises(cfg.ConfigError, match="must not be writable or readable by others"):
        load(tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_token_file=str(token_file))))


def test_metrics_are_off_without_a_token_file(tmp_path):
    assert load(tmp_path, minimal(tmp_path))["dashboard"]["metrics_token"] is None
    missing = str(tmp_path / "not-created-yet.token")
    config = load(tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_token_file=missing)))
    assert config["dashboard"]["metrics_token"] is None and config["dashboard"]["metrics_allow"] == []


def test_metrics_allow_takes_addresses_and_networks_only(tmp_path):
    config = load(
        tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_allow=["10.0.0.5", "192.168.1.0/24", "::1"]))
    )
    assert config["dashboard"]["metrics_allow"] == ["10.0.0.5", "192.168.1.0/24", "::1"]
    with pytest.raises(cfg.ConfigError, match="dashboard.metrics_allow: 'prometheus.lan' is not an IP address"):
        load(tmp_path, minimal(tmp_path, dashboard=dashboard_with(metrics_allow=["prometheus.lan"])))


def test_no_offsite_section_changes_nothing(tmp_path):
    config = load(tmp_path, minimal(tmp_path))
    assert config["offsite"]["enabled"] is False
    assert "offsite_copy" not in config["security"]["allowed_actions"]


def test_offsite_files_must_be_private_and_restic_must_exist(tmp_path):
    pw = tmp_path / "offsite.password"
    pw.write_text("repository-password\n")
    env = tmp_path / "offsite.env"
    env.write_text("AWS_ACCESS_KEY_ID=AKIDEXAMPLE\nAWS_SECRET_ACCESS_KEY=verysecretvalue123\n")
    os.chmod(pw, 0o600)
    os.chmod(env, 0o400)
    section = {"repository": str(tmp_path / "repo"), "password_file": str(pw), "env_file": str(env)}
    config = load(tmp_path, minimal(tmp_path, offsite=section))
    assert config["offsite"]["retention"] == config["backups"]["retention"]
    assert config["offsite"]["check_subset"] == "5%" and config["offsite"]["limit_upload_kbps"] == 0
    assert {"offsite_copy", "offsite_check"} <= set(config["security"]["allowed_actions"])
    assert "verysecretvalue123" in cfg.secrets_of(config)
    os.chmod(env, 0o640)
    with pytest.raises(cfg.ConfigError, match="offsite.env_file.*must not be readable by group or others") as bad:
        load(tmp_path, minimal(tmp_path, offsite=section))
    assert "\n" not in str(bad.value) and "verysecretvalue123" not in str(bad.value)
    os.chmod(env, 0o600)
    os.chmod(pw, 0o604)
    with pytest.raises(cfg.ConfigError, match="offsite.password_file"):
        load(tmp_path, minimal(tmp_path, offsite=section))
    os.chmod(pw, 0o600)
    with pytest.raises(cfg.ConfigError, match="restic was not found"):
        load(tmp_path, minimal(tmp_path, offsite={**section, "restic_binary": "/nonexistent/restic"}))


def test_the_dashboard_reads_no_offsite_credential_but_knows_offsite_is_configured(tmp_path):
    pw = tmp_path / "offsite.password"
    pw.write_text("repository-password\n")
    env = tmp_path / "offsite.env"
    env.write_text("AWS_SECRET_ACCESS_KEY=verysecretvalue123\n")
    os.chmod(pw, 0o600)
    os.chmod(env, 0o600)
    section = {"repository": "s3:https://s3.example.com/b", "password_file": str(pw), "env_file": str(env)}
    path = tmp_path / "dash.yaml"
    path.write_text(minimal(tmp_path, offsite={**section, "restic_binary": "/nonexistent/restic"}))
    config = cfg.load_config(path, offsite_credentials=False)
    assert config["offsite"]["enabled"] is True
    assert {"offsite_copy", "offsite_check"} <= set(config["security"]["allowed_actions"])
    assert "verysecretvalue123" not in repr(config) and "repository-password" not in repr(config)


def test_an_unreadable_offsite_env_file_is_one_line_for_the_agent_not_a_traceback(tmp_path):
    pw = tmp_path / "offsite.password"
    pw.write_text("repository-password\n")
    os.chmod(pw, 0o600)
    env = tmp_path / "offsite.env"
    env.mkdir(mode=0o700)  # stat passes, open fails (as an unreadable file does, also for root)
    section = {"repository": str(tmp_path / "repo"), "password_file": str(pw), "env_file": str(env)}
    with pytest.raises(cfg.ConfigError, match=r"offsite\.env_file: cannot read") as bad:
        load(tmp_path, minimal(tmp_path, offsite=section))
    assert "\n" not in str(bad.value)


def test_a_service_started_with_only_its_config_skips_the_full_parser():
    from fmappliance.config import DEFAULT_CONFIG_PATH, config_path_only

    assert config_path_only([]) == DEFAULT_CONFIG_PATH
    assert config_path_only(["--config", "/etc/x.yaml"]) == "/etc/x.yaml"
    assert config_path_only(["--config=/etc/x.yaml"]) == "/etc/x.yaml"
    # Anything else (help, checks, sub-commands, a missing value) goes through argparse.
    for argv in (
        ["--help"],
        ["--config"],
        ["--config="],
        ["--config", "--check-config"],
        ["--check-config"],
        ["--config", "c.yaml", "--check-config"],
        ["fleet", "status"],
        ["--version"],
    ):
        assert config_path_only(argv) is None, argv
