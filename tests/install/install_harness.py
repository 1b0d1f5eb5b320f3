"""Shared by the install tests and the nginx/start-up benchmarks.

``build_dist(dest)``             packaging/build.sh into dest (returns dest)
``run_install(root, *args)``     install.sh --root root ..., returns CompletedProcess
``tree_hashes(root)``            {relative path: sha256} of every file under root
``NginxSite``                    the installer's rendered site run by the real nginx on free ports
``start_zipapp(pyz, config)``    a zipapp started as a service process (waits until it listens)
``start_appliance(tmp, dist, procs)``  agent + dashboard zipapps + nginx with a published backup, signed in
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from support.config_factory import TEST_PASSWORD, TEST_TOKEN, TEST_USER, write_config

REPO = Path(__file__).resolve().parents[2]
DOUBLES = REPO / "tests" / "doubles"
SITE = "site1.example.com"
INSTALL_SH = REPO / "install.sh"
BUILD_SH = REPO / "packaging" / "build.sh"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# The interpreter the units use; the zipapps must run with nothing but it.
SYSTEM_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# Behind nginx every request is HTTPS, so the session cookie carries the __Host- prefix.
SESSION_COOKIE = "__Host-fmsession"


def build_dist(dest: Path, epoch: str | None = None, repo: Path = REPO) -> Path:
    env = dict(os.environ, PYTHON=sys.executable, DIST_DIR=str(dest))
    if epoch:
        env["SOURCE_DATE_EPOCH"] = epoch
    proc = subprocess.run(
        ["bash", str(repo / "packaging" / "build.sh")], env=env, cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"build failed:\n{proc.stdout}\n{proc.stderr}"
    return dest


def built_or_build_dist(tmp: Path) -> Path:
    """The repo's dist/ when it holds both zipapps (benchmarks reuse `make build`), else a fresh build under tmp."""
    dist = REPO / "dist"
    if (dist / "fm-agent.pyz").is_file() and (dist / "fm-dashboard.pyz").is_file():
        return dist
    print("no dist/: building the zipapps first")
    return build_dist(tmp / "dist")


def snapshot_sources(dest: Path) -> Path:
    """A frozen copy of the checkout's sources (what git would commit), at another path."""
    listed = subprocess.run(
        [
            "git",
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
            "--",
            "pyproject.toml",
            "README.md",
            "LICENSE",
            "fmappliance",
            "assets",
            "packaging",
        ],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = REPO / os.fsdecode(name)
        if source.is_file():
            (dest / os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / os.fsdecode(name))
    return dest


#: The last commit whose installer listened on TCP and chose the agent user from /home/* globs.
PREVIOUS_INSTALLER = "ecc0485e1cc6e38bbc6f500f541e2dc4e04a006b"


def previous_installer(dest: Path) -> Path | None:
    """That commit's install.sh and packaging/ extracted under dest (None outside a git checkout holding it)."""
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", PREVIOUS_INSTALLER], capture_output=True).returncode:
        return None
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS_INSTALLER, "install.sh", "packaging"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "install.sh"


def install_env(dist: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FM_") and k != "FRAPPE_MANAGER_HOME"}
    env.update(
        FM_DIST_DIR=str(dist),
        FM_SEARCH_HOMES="/nonexistent",
        FM_DOCKER="/nonexistent/docker",
        FM_SERVER_NAMES="localhost",
    )
    env.update(extra)
    return env


def run_install(root: Path | None, *args: str, env: dict) -> subprocess.CompletedProcess:
    argv = ["bash", str(INSTALL_SH)] + (["--root", str(root)] if root else []) + list(args)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def tree_hashes(root: Path) -> dict:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> float:
    """Seconds until 127.0.0.1:port accepts a connection (raises on timeout or early exit)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic() - start
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


# ------------------------------------------------------------------ memory W^X like systemd

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1


def mdwe_supported() -> bool:
    """Whether this kernel can refuse W+X memory (what MemoryDenyWriteExecute=yes enforces)."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import ctypes,sys; sys.exit(ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0)",
        ]
    )
    return probe.returncode == 0


def deny_write_execute() -> None:
    """preexec_fn: the child may never map memory writable and executable (like the units)."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE) failed")


def start_zipapp(
    pyz: Path, config: Path, port: int, shiv_root: Path, log: Path, env: dict | None = None, wx_denied: bool = False
) -> subprocess.Popen:
    """Start `python3 <pyz> --config <config>` as the units do and wait until it listens."""
    shiv_root.mkdir(parents=True, exist_ok=True)
    run_env = dict(env or os.environ, SHIV_ROOT=str(shiv_root))
    proc = subprocess.Popen(
        [SYSTEM_PYTHON, str(pyz), "--config", str(config)],
        env=run_env,
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=deny_write_execute if wx_denied else None,
    )
    try:
        wait_listening(port, proc, timeout=20)
    except Exception:
        stop(proc)
        raise RuntimeError(f"{pyz.name} did not start; log:\n{log.read_text()[-3000:]}") from None
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


# ------------------------------------------------------------------ nginx


def make_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "test.crt", directory / "test.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class NginxSite:
    """The site and snippet install.sh rendered under `root`, run by the real nginx as a child process.

    Only paths are rewritten (logs, snippet, certificate, backups, upstream) so that what is tested
    is the installer's configuration.
    """

    def __init__(
        self,
        root: Path,
        workdir: Path,
        http_port: int,
        https_port: int,
        *,
        dashboard_port: int,
        backups_dir: Path,
        cert: Path,
        key: Path,
        extra_http: str = "",
    ):
        self.root, self.workdir = root, workdir
        self.http_port, self.https_port = http_port, https_port
        self.cert = cert
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        site = (root / "etc/nginx/sites-available/fm-dashboard.conf").read_text()
        site = (
            site.replace("/var/log/nginx/", f"{self.logs}/")
            .replace("/etc/nginx/snippets/", f"{root}/etc/nginx/snippets/")
            .replace("/etc/fmappliance/tls/selfsigned.crt", str(cert))
            .replace("/etc/fmappliance/tls/selfsigned.key", str(key))
            .replace("alias /var/backups/fmappliance/;", f"alias {backups_dir}/;")
        )
        # The upstream (the dashboard's socket for new installs, TCP for older configs) -> the test's dashboard.
        site = re.sub(
            r"^    server (unix:[^;\s]+|[\d.]+:\d+);$",
            f"    server 127.0.0.1:{dashboard_port};",
            site,
            count=1,
            flags=re.M,
        )
        # Listen on the ports asked for, whatever ports the site was rendered with.
        rendered_http = re.search(r"listen (\d+) default_server;", site).group(1)
        rendered_https = re.search(r"listen (\d+) ssl", site).group(1)
        for old, new in ((rendered_http, http_port), (rendered_https, https_port)):
            site = re.sub(rf"(listen (?:\[::\]:)?){old}\b", rf"\g<1>{new}", site)
            site = site.replace(f"$host:{old}$request_uri", f"$host:{new}$request_uri")
        (workdir / "site.conf").write_text(site)
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};" if os.getuid() == 0 else ""
        temp = " ".join(
            f"{kind}_temp_path {workdir}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (workdir / "nginx.conf").write_text(f"""
{user}
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {self.logs}/error.log;
daemon off;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    {temp}
    access_log {self.logs}/access.log;
    include {workdir}/site.conf;
    {extra_http.replace("@HTTPS_PORT@", str(https_port))}
}}
""")
        self.proc: subprocess.Popen | None = None

    def argv(self, *extra: str) -> list[str]:
        return [
            NGINX,
            "-p",
            str(self.workdir),
            "-c",
            str(self.workdir / "nginx.conf"),
            "-e",
            str(self.logs / "error.log"),
            *extra,
        ]

    def check(self) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv("-t"), capture_output=True, text=True)

    def start(self) -> NginxSite:
        checked = self.check()
        assert checked.returncode == 0, checked.stderr
        self.proc = subprocess.Popen(
            self.argv(), stdout=subprocess.DEVNULL, stderr=open(self.logs / "stderr.log", "ab"), start_new_session=True
        )
        wait_listening(self.https_port, self.proc)
        wait_listening(self.http_port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


# ------------------------------------------------------------------ the whole appliance


@dataclass
class Response:
    status: int
    headers: list
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Appliance:
    tmp: Path
    root: Path
    cert: Path
    key: Path
    config: Path
    agent_port: int
    dashboard_port: int
    nginx: NginxSite
    backups_dir: Path
    session: str = ""
    manifest: dict | None = None

    def tls_context(self, **versions) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.cert))
        for attr, value in versions.items():
            setattr(ctx, attr, value)
        return ctx

    def https(
        self,
        method: str,
        path: str,
        *,
        host: str = "localhost",
        body: bytes | None = None,
        headers: dict | None = None,
        sni: str = "localhost",
    ) -> Response:
        raw = socket.create_connection(("127.0.0.1", self.nginx.https_port), timeout=30)
        sock = self.tls_context().wrap_socket(raw, server_hostname=sni)
        conn = http.client.HTTPSConnection("localhost", self.nginx.https_port, timeout=30)
        conn.sock = sock
        all_headers = {"Host": f"{host}:{self.nginx.https_port}", **(headers or {})}
        if self.session and "Cookie" not in all_headers:
            all_headers["Cookie"] = f"{SESSION_COOKIE}={self.session}"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        result = Response(response.status, response.getheaders(), response.read())
        conn.close()
        return result

    def login(self, password: str = TEST_PASSWORD) -> Response:
        page = self.https("GET", "/login", headers={"Cookie": ""})
        nonce = next(v.split(";")[0].split("=", 1)[1] for v in page.header("Set-Cookie") if v.startswith("fmlogin="))
        token = page.body.decode().split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        form = urllib.parse.urlencode(
            {"username": TEST_USER, "password": password, "csrf_token": token, "next": "/dashboard"}
        )
        return self.https(
            "POST",
            "/login",
            body=form.encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Cookie": f"fmlogin={nonce}",
                "Origin": f"https://localhost:{self.nginx.https_port}",
            },
        )


def agent_call(port: int, method: str, path: str, body: dict | None = None) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        method,
        path,
        body=json.dumps(body) if body else None,
        headers={"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = json.loads(response.read() or b"{}")
    conn.close()
    assert response.status < 300, (response.status, data)
    return data


def make_backup(agent_port: int) -> dict:
    """A real backup_site job through the agent; returns the newest manifest summary."""
    job = agent_call(agent_port, "POST", "/action", {"action": "backup_site", "stack": "prod", "site": SITE})["job"]
    deadline = time.monotonic() + 60
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = agent_call(agent_port, "GET", f"/jobs/{job['id']}")
    assert job["status"] == "succeeded", job
    return agent_call(agent_port, "GET", f"/backups/prod/{SITE}")["backups"][0]


def make_world(tmp: Path):
    """The docker double with one frappe_docker project holding one site."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name in ("docker", "fm"):
        text = (DOUBLES / name).read_text().split("\n", 1)[1]
        (bin_dir / name).write_text(f"#!{sys.executable} -IS\n{text}")
        (bin_dir / name).chmod(0o755)
    for module in DOUBLES.glob("*.py"):  # double_state and the modules it and the doubles import
        shutil.copy(module, bin_dir / module.name)
    sys.path.insert(0, str(DOUBLES))
    from double_state import DoubleWorld, normalise_project

    world = DoubleWorld(tmp / "double-state")
    project_dir = tmp / "frappe_docker"
    project_dir.mkdir()
    services = ("backend", "frontend", "websocket", "scheduler", "db")
    (project_dir / "compose.yaml").write_text(
        "services:\n" + "".join(f"  {s}:\n    image: frappe/erpnext:v15\n" for s in services)
    )
    project = normalise_project(project_dir.name)
    world.define_project(project, {s: f"{project}-{s}-1" for s in services})
    world.add_compose_site(project, SITE)
    return bin_dir, project_dir


def start_appliance(
    tmp: Path, dist: Path, procs: list, download_mode: str = "stream", extra_http: str = ""
) -> Appliance:
    """Agent and dashboard zipapps behind the real nginx, one backup published, signed in.

    The certificate is ``tmp/tls/test.crt`` (key ``test.key``), the site's files are under
    ``tmp/root``; ``extra_http`` is added to nginx's http block (``@HTTPS_PORT@`` filled in).  Started processes are
    appended to ``procs`` (the caller stops them).
    """
    bin_dir, project_dir = make_world(tmp)
    agent_port, dashboard_port = free_port(), free_port()
    config = write_config(
        tmp,
        agent={"port": agent_port, "docker_binary": str(bin_dir / "docker"), "fm_binary": str(bin_dir / "fm")},
        stacks={"prod": {"type": "compose", "path": str(project_dir)}},
        dashboard={
            "port": dashboard_port,
            "agent_url": f"http://127.0.0.1:{agent_port}",
            "trusted_proxy": "127.0.0.1",
            "download_mode": download_mode,
            # Written by the install below (before the dashboard starts): nginx's proxy secret.
            "proxy_secret_file": str(tmp / "root/etc/fmappliance/proxy-secret"),
        },
    )
    root = tmp / "root"
    http_port, https_port = free_port(), free_port()
    proc = run_install(
        root,
        "--domain",
        "localhost",
        "--http-port",
        str(http_port),
        "--https-port",
        str(https_port),
        env=install_env(dist),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cert, key = make_cert(tmp / "tls")
    wx_denied = mdwe_supported()
    for name, port in (("fm-agent", agent_port), ("fm-dashboard", dashboard_port)):
        procs.append(
            start_zipapp(
                dist / f"{name}.pyz", config, port, tmp / "cache" / name, tmp / f"{name}.log", wx_denied=wx_denied
            )
        )
    backups_dir = tmp / "backups"
    site = NginxSite(
        root,
        tmp / "nginx",
        http_port,
        https_port,
        dashboard_port=dashboard_port,
        backups_dir=backups_dir,
        cert=cert,
        key=key,
        extra_http=extra_http,
    ).start()
    procs.append(site.proc)
    app = Appliance(tmp, root, cert, key, config, agent_port, dashboard_port, site, backups_dir)
    app.manifest = make_backup(agent_port)
    response = app.login()
    assert response.status == 303, (response.status, response.body[:500])
    app.session = next(
        v.split(";")[0].split("=", 1)[1] for v in response.header("Set-Cookie") if v.startswith(SESSION_COOKIE + "=")
    )
    return app
