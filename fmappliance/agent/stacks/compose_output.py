"""docker compose's output, read the same way for both stack types (an fm bench is a compose project too),
and the two things both ask a compose project the same way: a container's addresses, mariadb as root.

Facts (docs/doubles.md, "Output shapes"): `ps --format json` printed one JSON array up to compose v2.20 and
one object per line from v2.21; `configurator` and friends are one-shot services whose normal state is
"exited (0)".
"""

from __future__ import annotations

import ipaddress
import json

from fmappliance.agent.stacks.base import Command, OpsFailed, Run

#: Services that run once and exit; exit code 0 is their healthy end state.
ONE_SHOT_SERVICES = frozenset({"configurator", "create-site", "migrator"})


def log_options(service: str, tail: int, follow: bool) -> list[str]:
    return ["logs", "--no-color", "--timestamps", "--tail", str(tail)] + (["--follow"] if follow else []) + [service]


def parse_ps(output: str) -> list[dict]:
    """Rows of `ps --format json`, accepting the array and the line-per-object shapes.

    Lines that are not JSON (warnings on merged stderr) are skipped.
    """
    rows: list[dict] = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line[0] not in "[{":
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        items = data if isinstance(data, list) else [data]
        rows.extend(item for item in items if isinstance(item, dict))
    return rows


def service_rows(rows: list[dict]) -> list[dict]:
    """The API's per-service view of ps rows (one-off `run` containers left out)."""
    out = []
    for row in rows:
        labels = str(row.get("Labels") or "")
        if "com.docker.compose.oneoff=True" in labels:
            continue
        service = str(row.get("Service") or "")
        try:
            exit_code = int(row.get("ExitCode") or 0)
        except (TypeError, ValueError):
            exit_code = 0
        out.append(
            {
                "service": service,
                "name": str(row.get("Name") or ""),
                "state": str(row.get("State") or "").lower(),
                "health": str(row.get("Health") or ""),
                "status": str(row.get("Status") or ""),
                "exit_code": exit_code,
                "one_shot": service in ONE_SHOT_SERVICES,
            }
        )
    out.sort(key=lambda s: (s["service"], s["name"]))
    return out


def compute_status(services: list[dict], expected: tuple | list = ()) -> tuple[str, str | None]:
    """running / partial / stopped, and why when not running.

    ``expected`` names long-running services that must exist (fm's main services); a
    missing one counts as not running.
    """
    long_running = [s for s in services if not s["one_shot"]]
    failed_one_shots = [
        s for s in services if s["one_shot"] and s["state"] in ("exited", "dead") and s["exit_code"] != 0
    ]
    present = {s["service"] for s in long_running}
    missing = [name for name in expected if name not in present]
    if not long_running and not missing:
        return "stopped", "no containers exist for this stack (it is down)"
    up = [s for s in long_running if s["state"] == "running"]
    down = [s for s in long_running if s["state"] != "running"]
    problems = [f"{s['service']} ({s['status'] or s['state']})" for s in down]
    problems += [f"{name} (no container)" for name in missing]
    problems += [f"{s['service']} failed ({s['status'] or 'exit ' + str(s['exit_code'])})" for s in failed_one_shots]
    if not up:
        return "stopped", "not running: " + ", ".join(problems)
    if problems:
        return "partial", "not running: " + ", ".join(problems)
    return "running", None


#: `docker inspect` template printing every address a container has on its networks, space-separated.
ADDRESSES_TEMPLATE = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"


def container_addresses(docker: str, stack: dict, ps: list[str], service: str, run: Run) -> list[str]:
    """The addresses of ``service``'s running container, as docker records them (not as the container says)."""
    listing = run(Command(ps, None, stack["path"]), quiet=True, check=False)
    names = [
        row["name"]
        for row in service_rows(parse_ps(listing.output))
        if row["service"] == service and row["state"] == "running" and row["name"]
    ]
    if not listing.ok or not names:
        raise OpsFailed(f"the {service} container is not running, so its address is not known")
    result = run(
        Command([docker, "inspect", "--format", ADDRESSES_TEMPLATE, *names], None, stack["path"]),
        quiet=True,
        check=False,
    )
    addresses = []
    for word in result.output.split() if result.ok else []:
        try:
            addresses.append(str(ipaddress.ip_address(word)))
        except ValueError:
            continue
    if not addresses:
        raise OpsFailed(f"docker did not report an address of the {service} container")
    return sorted(set(addresses))


def root_mariadb(compose: list[str], service: str, env: dict, cwd: str, sql: str, root_password: str) -> Command:
    """`<compose> exec -T -e MYSQL_PWD <service> mariadb -uroot` with ``sql`` on stdin; the password travels
    as MYSQL_PWD in the docker client's environment (`exec -e NAME` passes the client's own value), never in
    an argv.  ``compose`` is the project's `docker compose ...` prefix, ``env`` the environment it needs."""
    argv = [*compose, "exec", "-T", "-e", "MYSQL_PWD", service, "mariadb", "-uroot"]
    return Command(argv, {**env, "MYSQL_PWD": root_password}, cwd, sql.encode())
