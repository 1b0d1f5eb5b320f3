"""A tmp world for agent tests: the docker/fm doubles, one compose stack, one fm bench.

``world``          paths, the config, and ``world.doubles`` (DoubleWorld: argv log, faults, containers)
``client``         the agent app called in-process through WSGI (``client.get(path)``, ``client.post_action(...)``)
``agent_process``  a factory starting ``python -m fmappliance.agent`` as a real process on a free port
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fmappliance.config import KNOWN_ACTIONS, load_config
from support.config_factory import TEST_TOKEN, write_config

DOUBLES = Path(__file__).resolve().parent.parent / "doubles"
sys.path.insert(0, str(DOUBLES))
from double_state import DoubleWorld  # noqa: E402

COMPOSE_SERVICES = ("configurator", "backend", "frontend", "websocket", "queue-short", "queue-long", "scheduler",
                    "db", "redis-cache", "redis-queue")
FM_SERVICES = ("frappe", "nginx", "socketio", "schedule", "redis-cache", "redis-queue")
FM_WORKERS = ("short-worker", "long-worker")
COMPOSE_SITES = ("site1.example.com", "site2.example.com")
LIST_SITES_ARGV = ["find", "sites", "-mindepth", "2", "-maxdepth", "2", "-name", "site_config.json"]
FM_SITE = "erp.localhost"


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
        return str(self.bin / "fm")

    def write_config(self, **sections) -> Path:
        agent = {"fm_binary": self.fm, "docker_binary": self.docker, "status_cache_seconds": 5, "status_timeout": 10,
                 **sections.pop("agent", {})}
        stacks = sections.pop("stacks", None) or {
            "prod": {"type": "compose", "path": str(self.compose_path)},
            "erp": {"type": "fm", "path": str(self.bench_path)},
        }
        security = {"token": TEST_TOKEN, "allowed_actions": list(KNOWN_ACTIONS), **sections.pop("security", {})}
        self.config_path = write_config(self.root, agent=agent, stacks=stacks, security=security, **sections)
        self.config = load_config(self.config_path)
        return self.config_path

    def published(self, stack: str, site: str) -> list[str]:
        d = Path(self.config["backups"]["base_path"]) / stack / site
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def install_doubles(bin_dir: Path) -> None:
    """Copy the doubles; their interpreter is fixed so a minimal PATH (or a pyenv shim) doesn't matter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    interpreter = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    for name in ("docker", "fm"):
        text = (DOUBLES / name).read_text()
        lines = text.split("\n", 1)
        (bin_dir / name).write_text(f"#!{interpreter} -IS\n" + lines[1])
        (bin_dir / name).chmod(0o755)
    shutil.copy(DOUBLES / "double_state.py", bin_dir / "double_state.py")


def make_compose_stack(world_root: Path, doubles: DoubleWorld, name: str = "frappe_docker",
                       sites=COMPOSE_SITES, services=COMPOSE_SERVICES) -> tuple[Path, str]:
    path = world_root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "compose.yaml").write_text("services:\n" + "".join(f"  {s}:\n    image: frappe/erpnext:v15\n" for s in services))
    project = doubles_project(name)
    doubles.define_project(project, {s: f"{project}-{s}-1" for s in services})
    for site in sites:
        doubles.add_compose_site(project, site)
    return path, project


def doubles_project(dirname: str) -> str:
    from double_state import normalise_project

    return normalise_project(dirname)


def make_fm_bench(world_root: Path, doubles: DoubleWorld, bench: str = FM_SITE) -> tuple[Path, Path, str]:
    home = world_root / "fmhome"
    bench_path = home / "sites" / bench
    under = bench.replace(".", "_")
    bench_path.mkdir(parents=True, exist_ok=True)
    (bench_path / "docker-compose.yml").write_text("services:\n" + "".join(
        f"  {s}:\n    image: ghcr.io/rtcamp/frappe-manager-{s}:v0.20\n    container_name: fm__{under}__{s}\n" for s in FM_SERVICES))
    (bench_path / "docker-compose.workers.yml").write_text("services:\n" + "".join(
        f"  {s}:\n    container_name: fm__{under}__{s}\n" for s in FM_WORKERS))
    site_dir = bench_path / "workspace" / "frappe-bench" / "sites" / bench
    (site_dir / "private" / "backups").mkdir(parents=True, exist_ok=True)
    (site_dir / "site_config.json").write_text(json.dumps({"db_name": "_" + under}))
    (bench_path / "workspace" / "frappe-bench" / "sites" / "common_site_config.json").write_text("{}")
    project = doubles_project(bench)
    doubles.define_project(project, {s: f"fm__{under}__{s}" for s in FM_SERVICES + FM_WORKERS})
    return home, bench_path, project


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


@pytest.fixture
def world(tmp_path) -> World:
    doubles = DoubleWorld(tmp_path / "double-state")
    install_doubles(tmp_path / "bin")
    compose_path, compose_project = make_compose_stack(tmp_path, doubles)
    fm_home, bench_path, fm_project = make_fm_bench(tmp_path, doubles)
    w = World(tmp_path, tmp_path / "bin", doubles, compose_path, compose_project, fm_home, bench_path, fm_project)
    w.write_config()
    yield w
    kill_hanging_doubles(doubles)


# ---------------------------------------------------------------------- in-process WSGI client


class Response:
    def __init__(self, status: str, headers: list, body: bytes):
        self.status_line = status
        self.status = int(status.split()[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), (self.status, self.headers, self.body[:200])
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status_line} {self.body[:200]!r}>"


class WsgiClient:
    """Calls a WSGI app in-process (no webtest needed)."""

    def __init__(self, app, token: str = TEST_TOKEN):
        self.app = app
        self.token = token

    def request(self, method: str, path: str, *, body: bytes = b"", headers: dict | None = None,
                token: str | None | bool = True, query: str = "") -> Response:
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "9100", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        if body:
            environ["CONTENT_LENGTH"] = str(len(body))
        if token is True:
            environ["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        elif isinstance(token, str):
            environ["HTTP_AUTHORIZATION"] = token
        for key, value in (headers or {}).items():
            name = key.upper().replace("-", "_")
            if name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[name] = value
            else:
                environ["HTTP_" + name] = value
        captured = {}

        def start_response(status, response_headers, exc_info=None):
            captured["status"], captured["headers"] = status, response_headers

        result = self.app(environ, start_response)
        try:
            data = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        return Response(captured["status"], captured["headers"], data)

    def get(self, path: str, **kw) -> Response:
        if "?" in path:
            path, kw["query"] = path.split("?", 1)
        return self.request("GET", path, **kw)

    def post_json(self, path: str, data, **kw) -> Response:
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request("POST", path, body=json.dumps(data).encode(), headers=headers, **kw)

    def post_action(self, action: str, stack: str, site: str | None = None, **kw) -> Response:
        data = {"action": action, "stack": stack}
        if site is not None:
            data["site"] = site
        return self.post_json("/action", data, **kw)


@pytest.fixture
def make_client(world):
    """Build an app for the world's current config (tests may rewrite the config first)."""
    from fmappliance.agent.app import make_app

    apps = []

    def build():
        app = make_app(world.config)
        apps.append(app)
        client = WsgiClient(app)
        client.services = app.agent_services
        return client

    yield build
    for app in apps:
        app.agent_services.close()


@pytest.fixture
def client(make_client):
    return make_client()


def wait_job(client, job_id: str, timeout: float = 30) -> dict:
    job = client.services.jobs.wait(job_id, timeout)
    assert job["status"] in ("succeeded", "failed"), job
    return job


# ---------------------------------------------------------------------- a real agent process


class AgentProcess:
    def __init__(self, config_path: Path, port: int, log_path: Path):
        self.config_path = config_path
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc = None

    def start(self, timeout: float = 15) -> "AgentProcess":
        env = {k: v for k, v in os.environ.items() if k != "FMAPPLIANCE_LOG_LEVEL"}
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "fmappliance.agent", "--config", str(self.config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=1) as res:
                    if res.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("agent did not answer GET / in time: " + self.log_path.read_text())

    def request(self, method: str, path: str, data=None, token: str | None = TEST_TOKEN):
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.status, json.loads(res.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_job(self, job_id: str, statuses=("succeeded", "failed"), timeout: float = 30) -> dict:
        end = time.monotonic() + timeout
        while True:
            status, job = self.request("GET", f"/jobs/{job_id}")
            if status == 200 and job["status"] in statuses:
                return job
            if time.monotonic() > end:
                raise AssertionError(f"job {job_id} did not reach {statuses}: {job}")
            time.sleep(0.05)

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


@pytest.fixture
def agent_process(world):
    """Factory: ``agent_process()`` starts the agent on the world's config and port; stopped at teardown."""
    started = []

    def start():
        proc = AgentProcess(world.config_path, world.config["agent"]["port"], world.root / "agent.log")
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        if proc.proc and proc.proc.poll() is None:
            proc.proc.kill()
            proc.proc.wait()
