"""`fm-dashboard fleet inventory`: Ansible YAML and Prometheus file_sd JSON from the registry (real CLI)."""

from __future__ import annotations

import json

from support.fleet_world import FleetHub

from fmappliance.dashboard.fleet_registry import FleetRegistry
from fmappliance.dashboard.state_db import StateDB


def _joined(hub: FleetHub, *names: str) -> None:
    registry = FleetRegistry(StateDB(hub.config["dashboard"]["state_dir"]))
    for i, name in enumerate(names):
        token, _ = registry.create_token("0" * 64, name, 600)
        registry.redeem(
            token.token_id,
            token.secret,
            name,
            f"192.0.2.{i + 10}",
            "1.0",
            50,
            sign=lambda n: "CERT",
            cert_sha256=lambda pem, i=i: f"{i:064x}",
        )


def test_inventory_for_prometheus_is_file_sd_json_with_each_servers_metrics_path(tmp_path):
    hub = FleetHub(tmp_path / "hub")
    _joined(hub, "erp-b", "erp-c")
    done = hub.cli("inventory", "--format", "prometheus", "--target", "dash.example.com:443")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {
            "targets": ["dash.example.com:443"],
            "labels": {"server": "erp-b", "__metrics_path__": "/metrics/server/erp-b"},
        },
        {
            "targets": ["dash.example.com:443"],
            "labels": {"server": "erp-c", "__metrics_path__": "/metrics/server/erp-c"},
        },
    ]
    # Without --target: this host's name.
    default = json.loads(hub.cli("inventory", "--format", "prometheus").stdout)
    assert default[0]["targets"][0] and default[0]["labels"]["server"] == "erp-b"
    bad = hub.cli("inventory", "--format", "prometheus", "--target", "http://x/y")
    assert bad.returncode == 2 and "is not a HOST[:PORT]" in bad.stderr
    ansible = hub.cli("inventory", "--format", "ansible")
    assert "erp-c:" in ansible.stdout and "ansible_host: 192.0.2.11" in ansible.stdout


def test_remove_takes_the_servers_schedules_and_names_config_ones(tmp_path):
    from fmappliance.dashboard.schedule_store import ScheduleStore

    hub = FleetHub(tmp_path / "hub")
    _joined(hub, "erp-b", "erp-c")
    store = ScheduleStore(hub.config["dashboard"]["state_dir"], default_tz="UTC")
    base = {"stack": "prod", "site": "*", "frequency": "daily", "time": "02:00", "timezone": "UTC"}
    store.add({**base, "server": "erp-b"}, "admin")
    kept = store.add({**base, "server": "erp-c"}, "admin")
    done = hub.cli("remove", "erp-b", "--yes")
    assert done.returncode == 0, done.stderr
    assert "removed its schedule: backup prod/* daily 02:00" in done.stdout
    assert [s["id"] for s in store.list()] == [kept["id"]]
