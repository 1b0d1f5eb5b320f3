"""Run by test_faults.py inside its own network namespace (``unshare -n``): a hub, one server world,
and a network black hole made by taking the namespace's loopback down (packets vanish: no RST, no
FIN, exactly what a dead NAT or a pulled cable does).  Half-open links are found by TCP keepalive
(short here: 1 s idle, 1 s interval, 2 probes, on both ends).  Prints one JSON line of findings."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.fleet_world import FleetHub, ServerWorld, wait_online  # noqa: E402
from support.polling import wait_for  # noqa: E402

from fmappliance.dashboard.agent_client import AgentError  # noqa: E402
from fmappliance.fleet import tls as fleet_tls  # noqa: E402

UNREACHABLE_AFTER = 3


def lo(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


def main() -> int:
    lo("up")
    fleet_tls.KEEPALIVE = (1, 1, 2)  # the hub runs in this process
    root = Path(tempfile.mkdtemp(prefix="fm-blackhole-"))
    hub = FleetHub(root / "hub", unreachable_after=UNREACHABLE_AFTER)
    hub.init()
    hub.start()
    world = ServerWorld(root / "erp-b", "erp-b")
    found: dict = {}
    try:
        assert world.join(hub.address, hub.token("erp-b"), "--name", "erp-b").returncode == 0
        uplink_json = world.fleet_dir / "uplink.json"
        uplink_json.write_text(json.dumps({**json.loads(uplink_json.read_text()), "keepalive": [1, 1, 2]}))
        world.start_agent()
        world.start_uplink()
        wait_online(hub.hub, "erp-b")
        found["online_before"] = bool(hub.client("erp-b").stacks()["stacks"])

        lo("down")
        cut = time.monotonic()
        wait_for(lambda: hub.hub.state("erp-b")["idle_connections"] == 0, 20, "keepalive to find the dead links")
        found["links_dropped_after"] = round(time.monotonic() - cut, 1)
        wait_for(lambda: hub.hub.state("erp-b")["state"] == "unreachable", 20, "unreachable")
        found["unreachable_after"] = round(time.monotonic() - cut, 1)
        asked = time.monotonic()
        try:
            hub.client("erp-b").stacks()
            found["refused"] = None
        except AgentError as exc:
            found["refused"] = [exc.status, exc.message]
        found["refused_in"] = round(time.monotonic() - asked, 2)
        found["uplink_alive_during"] = world.uplink.poll() is None

        lo("up")
        healed = time.monotonic()
        wait_online(hub.hub, "erp-b", timeout=90)
        found["online_again_after"] = round(time.monotonic() - healed, 1)
        found["works_again"] = bool(hub.client("erp-b").stacks()["stacks"])
    finally:
        world.stop()
        hub.stop()
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
