"""A tmp world shared by the agent and browser suites: the docker double, the real Frappe Manager
(0.20.0, run against that double), one compose stack, one fm bench laid out as FM writes it
(support/fm_home.py), and the agent and dashboard started as real processes.

``build_world(root)``      docker double and real-fm wrapper in ``root/bin``, fm double in ``root/fm-double``,
                           stacks built, a config written -> World
``AgentProcess``           ``python -m fmappliance.agent`` on a port; ``start()`` waits for ``GET /``
``DashboardProcess``       ``python -m fmappliance.dashboard`` on a port; ``start()`` waits for ``/healthz``
``kill_hanging_doubles``   ends double processes left sleeping by a ``hang`` fault
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from fmappliance.actions_table import ACTIONS
from fmappliance.config import load_config
from support.config_factory import TEST_TOKEN, write_config
from support.polling import wait_for
from support.units import service_env

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
if str(DOUBLES) not in sys.path:
    sys.path.insert(0, str(DOUBLES))
from double_state import DoubleWorld, normalise_project  # noqa: E402

from support.fm_home import (  # noqa: E402
    FM_IMAGES,
    FM_INSTALL_HINT,
    FM_VERSION,
    bench_compose_yaml,
    real_fm_path,
    set_bench_migrated_to,
    workers_compose_yaml,
    write_bench_config,
    write_fm_config,
    write_services,
)

COMPOSE_SERVICES = (
    "configurator",
    "backend",
    "frontend",
    "websocket",
    "queue-short",
    "queue-long",
    "scheduler",
    "db",
    "redis-cache",
    "redis-queue",
)
FM_SERVICES = ("frappe", "nginx", "socketio", "schedule", "redis-cache", "redis-queue")
FM_WORKERS = ("short-worker", "long-worker")
COMPOSE_SITES = ("site1.example.com", "site2.example.com")
LIST_SITES_ARGV = ["find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json"]
FM_SITE = "erp.localhost"
# Root passwords of the doubles' database servers, with the characters FM's generator uses, so a test
# can search argv, logs and output for them.
COMPOSE_DB_ROOT_PASSWORD = "cmpRoot!@%_-+?9Zq"
FM_DB_ROOT_PASSWORD = "fmRoot7!@%_-+?kX2wQ5vB8n"
BENCH_APPS = ("frappe", "erpnext")


@dataclass
class World:
    root: Path
    bin: Path
    doubles: DoubleWorld
    compose_path: Path
    compose_project: str
    fm_home: Path
    bench_path: Path
    fm_project: str
    config_path: Path = None
    config: dict = field(default_factory=dict)

    @property
    def docker(self) -> str:
        return str(self.bin / "docker")

    @property
    def fm(self) -> str:
        """The real Frappe Manager (through the wrapper that puts the docker double on its PATH)."""
        return str(self.bin / "fm")

    @property
    def fm_double(self) -> str:
        """The fm double: only for a fault the real fm cannot produce (a test using it says which)."""
        return str(self.root / "fm-double" / "fm")

    def make_bench_need_migration(self, bench_path: Path | None = None, migrated_to: str = "0.19.0") -> None:
        """The bench's bench_config.toml says it was migrated to an older FM: the real fm then prints
        "Bench migration required: <bench> (v0.19.0 → v0.20.0)" and exits 0 for start/restart/stop/shell."""
        set_bench_migrated_to(bench_path or self.bench_path, migrated_to)

    def write_config(self, **sections) -> Path:
        agent = {
            "port": 0,  # the agent picks a free port and says which (AgentProcess reads it)
            "fm_binary": self.fm,
            "docker_binary": self.docker,
            "status_cache_seconds": 5,
            "status_timeout": 10,
            **sections.pop("agent", {}),
        }
        stacks = sections.pop("stacks", None) or {
            "prod": {"type": "compose", "path": str(self.compose_path)},
            "erp": {"type": "fm", "path": str(self.bench_path)},
        }
        security = {"token": TEST_TOKEN, "allowed_actions": list(ACTIONS), **sections.pop("security", {})}
        self.config_path = write_config(self.root, agent=agent, stacks=stacks, security=security, **sections)
        self.config = load_config(self.config_path)
        return self.config_path

    def published(self, stack: str, site: str) -> list[str]:
        d = Path(self.config["backups"]["base_path"]) / stack / site
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


REAL_FM_WRAPPER = """\
\"\"\"The real Frappe Manager for this world (written by tests/support/world.py).

Records the call in the doubles' invocation log (as the fm double did), then runs the real `fm`
with the `docker` double first on PATH: FM runs `docker` from PATH, and the agent passes its own.
\"\"\"
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from double_state import DoubleWorld  # noqa: E402

REAL_FM = {real_fm!r}
DoubleWorld().record("fm", sys.argv[1:])
if not os.access(REAL_FM, os.X_OK):
    print({hint!r}, file=sys.stderr)
    sys.exit(127)
env = dict(os.environ, PATH=HERE + os.pathsep + os.environ.get("PATH", os.defpath))
os.execve(REAL_FM, [REAL_FM, *sys.argv[1:]], env)
"""


def install_doubles(bin_dir: Path) -> None:
    """``bin_dir/docker``: the docker double; ``bin_dir/fm``: the real fm (fm_home.real_fm_path()) run
    against that docker; ``bin_dir/../fm-double/fm``: the fm double, for the faults the real fm cannot
    produce.  The interpreter is fixed so a minimal PATH (or a pyenv shim) doesn't matter."""
    interpreter = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    fm_double_dir = bin_dir.parent / "fm-double"
    real = real_fm_path()
    for directory, name in ((bin_dir, "docker"), (fm_double_dir, "fm")):
        directory.mkdir(parents=True, exist_ok=True)
        text = (DOUBLES / name).read_text()
        (directory / name).write_text(f"#!{interpreter} -IS\n" + text.split("\n", 1)[1])
        (directory / name).chmod(0o755)
        for module in DOUBLES.glob("*.py"):
            shutil.copy(module, directory / module.name)
    wrapper = REAL_FM_WRAPPER.format(real_fm=str(real), hint=FM_INSTALL_HINT.format(path=real))
    (bin_dir / "fm").write_text(f"#!{interpreter} -IS\n" + wrapper)
    (bin_dir / "fm").chmod(0o755)


def make_compose_stack(
    world_root: Path, doubles: DoubleWorld, name: str = "frappe_docker", sites=COMPOSE_SITES, services=COMPOSE_SERVICES
) -> tuple[Path, str]:
    path = world_root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "compose.yaml").write_text(
        "services:\n" + "".join(f"  {s}:\n    image: frappe/erpnext:v15\n" for s in services)
    )
    project = doubles_project(name)
    doubles.define_project(project, {s: f"{project}-{s}-1" for s in services})
    if "db" in services:
        doubles.set_service_env(project, "db", MYSQL_ROOT_PASSWORD=COMPOSE_DB_ROOT_PASSWORD)
    for site in sites:
        doubles.add_compose_site(project, site)
    (doubles.volume_bench(project) / "sites" / "apps.txt").write_text("\n".join(BENCH_APPS) + "\n")
    return path, project


def doubles_project(dirname: str) -> str:
    return normalise_project(dirname)


def make_fm_bench(
    world_root: Path, doubles: DoubleWorld, bench: str = FM_SITE, migrated_to: str = FM_VERSION
) -> tuple[Path, Path, str]:
    """A bench as FM 0.20.0's `create` leaves it (tests/support/fm_home.py), its containers running."""
    home = world_root / "fmhome"
    bench_path = home / "sites" / bench
    under = bench.replace(".", "_")
    bench_path.mkdir(parents=True, exist_ok=True)
    write_fm_config(home)
    (bench_path / "docker-compose.yml").write_text(bench_compose_yaml(bench))
    (bench_path / "docker-compose.workers.yml").write_text(workers_compose_yaml(bench, FM_WORKERS))
    write_bench_config(bench_path, bench, migrated_to)
    site_dir = bench_path / "workspace" / "frappe-bench" / "sites" / bench
    (site_dir / "private" / "backups").mkdir(parents=True, exist_ok=True)
    (site_dir / "site_config.json").write_text(json.dumps({"db_name": "_" + under}))
    (bench_path / "workspace" / "frappe-bench" / "sites" / "common_site_config.json").write_text("{}")
    (bench_path / "workspace" / "frappe-bench" / "sites" / "apps.txt").write_text("\n".join(BENCH_APPS) + "\n")
    project = doubles_project(bench)
    doubles.define_project(project, {s: f"fm__{under}__{s}" for s in FM_SERVICES + FM_WORKERS})
    make_fm_services(home, doubles)
    return home, bench_path, project


def make_fm_services(home: Path, doubles: DoubleWorld) -> None:
    """FM's global `services` project: global-db (root password in services/secrets) and the proxy."""
    if (home / "services" / "docker-compose.yml").is_file():
        return
    write_services(home, FM_DB_ROOT_PASSWORD)
    doubles.define_project("services", {"global-db": "fm_global-db", "global-nginx-proxy": "fm_global-nginx-proxy"})
    doubles.set_service_env("services", "global-db", MYSQL_ROOT_PASSWORD=FM_DB_ROOT_PASSWORD)
    doubles.set_images(sorted(set(doubles.images()) | set(FM_IMAGES)))


def build_world(root: Path) -> World:
    """Doubles in ``root/bin``, their state in ``root/double-state``, a compose stack and an fm bench, a config."""
    doubles = DoubleWorld(root / "double-state")
    install_doubles(root / "bin")
    compose_path, compose_project = make_compose_stack(root, doubles)
    fm_home, bench_path, fm_project = make_fm_bench(root, doubles)
    world = World(root, root / "bin", doubles, compose_path, compose_project, fm_home, bench_path, fm_project)
    world.write_config()
    return world


def kill_hanging_doubles(doubles: DoubleWorld) -> None:
    for pid in doubles.hanging_pids():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(doubles.dir.parent).encode() in cmdline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------- real processes


def json_request(url: str, method: str, data=None, token: str | None = None) -> tuple[int, object]:
    """One JSON request (bearer ``token`` if any); (status, decoded body), errors included."""
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            return res.status, json.loads(res.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class ServedProcess:
    """One ``python -m <module> --config PATH`` process; its stdout and stderr go to ``log_path``."""

    module = ""
    name = ""
    #: Its systemd unit (packaging/systemd/<unit>.service), whose Environment= the process gets.
    unit = ""

    def __init__(self, config_path: Path, port: int, log_path: Path):
        """``port`` 0: the server binds any free port and names it in its "listening on" log line."""
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc = None
        self.log = None

    def is_ready(self) -> bool:
        raise NotImplementedError

    def _learn_port(self) -> bool:
        """With port 0: read the bound port from the log (the server logs it once it listens)."""
        if self.port:
            return True
        # Not the fleet hub's "fleet hub listening on …" line, which a dashboard may log first.
        found = re.findall(r"(?<!hub )listening on (?:http://)?[\d.]+:(\d+)", self.output()[self._log_start :])
        if found:
            self.port = int(found[-1])
            self.url = f"http://127.0.0.1:{self.port}"
        return bool(found)

    def output(self) -> str:
        """What the process wrote so far (for failure messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, timeout: float = 15) -> ServedProcess:
        # As its unit runs it (PYTHONOPTIMIZE: no asserts, no docstrings), so the suite tests what is deployed.
        env = service_env(self.unit)
        env.pop("FMAPPLIANCE_LOG_LEVEL", None)
        self.log = open(self.log_path, "ab")
        self._log_start = len(self.output())  # a restart appends to the same log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, "--config", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}: {self.output()}")
            try:
                return self._learn_port() and self.is_ready()
            except OSError:
                return False

        try:
            wait_for(ready, timeout, f"{self.name} to become ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.output()}") from None
        return self

    def stop(self, timeout: float = 10) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def ensure_stopped(self) -> None:
        """Teardown: stopped as systemd stops it (SIGTERM, then SIGKILL after a grace), so the service
        gets to end what it started."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log and not self.log.closed:
            self.log.close()


class AgentProcess(ServedProcess):
    module = "fmappliance.agent"
    name = "agent"
    unit = "fm-agent"

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/", timeout=1) as res:
            return res.status == 200

    def request(self, method: str, path: str, data=None, token: str | None = TEST_TOKEN):
        return json_request(self.url + path, method, data, token)

    def wait_job(self, job_id: str, statuses=("succeeded", "failed"), timeout: float = 30) -> dict:
        def ended() -> dict | None:
            status, job = self.request("GET", f"/jobs/{job_id}")
            return job if status == 200 and job["status"] in statuses else None

        return wait_for(ended, timeout, f"job {job_id} to reach {statuses}")


class DashboardProcess(ServedProcess):
    module = "fmappliance.dashboard"
    name = "dashboard"
    unit = "fm-dashboard"

    def is_ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/healthz", timeout=1) as res:
            return res.status == 200 and res.read() == b"ok"


def start_agent(world: World, log_name: str = "agent.log", timeout: float = 15) -> AgentProcess:
    return AgentProcess(world.config_path, world.config["agent"]["port"], world.root / log_name).start(timeout)


def start_agent_and_dashboard(world: World, **sections) -> tuple[AgentProcess, DashboardProcess]:
    """Both services on free ports they pick themselves: the agent first, then the dashboard
    configured with the agent's URL.  ``sections`` as for ``world.write_config``."""
    world.write_config(**sections)
    agent = start_agent(world)
    try:
        dashboard_section = {**sections.get("dashboard", {}), "agent_url": agent.url, "port": 0}
        world.write_config(**{**sections, "dashboard": dashboard_section})
        return agent, start_dashboard(world)
    except BaseException:
        agent.ensure_stopped()
        raise


def start_dashboard(world: World, log_name: str = "dashboard.log", timeout: float = 15) -> DashboardProcess:
    """The dashboard of the world's config; the config's ``dashboard.agent_url`` must point at the agent."""
    return DashboardProcess(world.config_path, world.config["dashboard"]["port"], world.root / log_name).start(timeout)
