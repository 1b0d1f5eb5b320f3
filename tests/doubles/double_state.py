"""Shared state of the `docker` and `fm` test doubles.

The state lives in ``<dir of this file>/../double-state/`` so the doubles find it without
environment variables (the agent gives commands a minimal environment).  Tests use the same
helpers (``DoubleWorld(state_dir)``) to set container states, add sites, switch faults and
read the argv log.

Files in the state dir:
  invocations.jsonl   one JSON object per call: prog, argv, cwd, env (a few keys), stdin_devnull
  faults.json         fault switches (see README.md)
  projects/<p>.json   {"services": {svc: {"state", "exit_code", "health", "name"}}}
  volumes/<p>/        the "sites" volume of a compose project: sites/<site>/...
  hangs/<pid>         doubles sleeping because of a hang fault (tests kill them by pid)
  stats.json          {container name: {"cpu_percent", "memory_bytes"}} set by tests for `docker stats`
  docker-root/        what `docker info` reports as DockerRootDir (unless set_docker_root chose another)
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import stat
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ONE_SHOT_SERVICES = ("configurator", "create-site", "migrator")
DAEMON_DOWN = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
# What a docker CLI (27) without the compose plugin answers to `docker compose <command>` (exit 1);
# with a flag after "compose" it is "unknown shorthand flag: 'p' in -p" (exit 125): see the docker double.
NO_COMPOSE_PLUGIN = "docker: 'compose' is not a docker command.\nSee 'docker --help'"


def default_state_dir() -> Path:
    return Path(os.path.dirname(os.path.abspath(__file__))).parent / "double-state"


def normalise_project(name: str) -> str:
    """Compose's project name from a directory name: lower case, only [a-z0-9_-]."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower())


class DoubleWorld:
    def __init__(self, state_dir: str | os.PathLike | None = None):
        self.dir = Path(state_dir) if state_dir else default_state_dir()
        self.dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ invocation log
    def record(self, prog: str, argv: list[str]) -> None:
        try:
            dn = os.stat("/dev/null")
            st = os.fstat(0)
            devnull = (st.st_rdev, st.st_ino) == (dn.st_rdev, dn.st_ino)
        except OSError:
            devnull = False
        entry = {
            "prog": prog,
            "argv": argv,
            "cwd": os.getcwd(),
            "env": {k: os.environ[k] for k in ("FRAPPE_MANAGER_HOME", "HOME", "PATH") if k in os.environ},
            "stdin_devnull": devnull,
            "pid": os.getpid(),
            "time": time.time(),
        }
        line = (json.dumps(entry) + "\n").encode()
        fd = os.open(self.dir / "invocations.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def invocations(self, prog: str | None = None) -> list[dict]:
        try:
            lines = (self.dir / "invocations.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        calls = [json.loads(line) for line in lines if line.strip()]
        return [c for c in calls if prog is None or c["prog"] == prog]

    def argvs(self, prog: str | None = None) -> list[list[str]]:
        return [c["argv"] for c in self.invocations(prog)]

    def note_secret(self, kind: str, value: str) -> None:
        """Remember a secret a double was given (a password, a key), so a test can look for it elsewhere."""
        with open(self.dir / "secrets.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": kind, "value": value}) + "\n")

    def secrets_given(self) -> list[dict]:
        """Every secret the doubles were given: {"kind", "value"} (root and temporary database passwords,
        Administrator passwords, backup and Password-field keys)."""
        try:
            lines = (self.dir / "secrets.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def clear_invocations(self) -> None:
        try:
            (self.dir / "invocations.jsonl").unlink()
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------ faults
    def faults(self) -> dict:
        try:
            return json.loads((self.dir / "faults.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def set_faults(self, **faults) -> None:
        """Replace all faults, e.g. set_faults(fail={"bench backup": 1}, ps_delay=0.15)."""
        tmp = self.dir / "faults.json.tmp"
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.dir / "faults.json")

    def update_faults(self, **faults) -> None:
        merged = self.faults()
        merged.update(faults)
        self.set_faults(**merged)

    # ------------------------------------------------------------ containers
    @contextmanager
    def locked(self):
        fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def project_file(self, project: str) -> Path:
        return self.dir / "projects" / f"{project}.json"

    def project(self, project: str) -> dict | None:
        try:
            return json.loads(self.project_file(project).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def save_project(self, project: str, data: dict) -> None:
        path = self.project_file(project)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    def define_project(self, project: str, services: dict[str, str], *, state: str = "running") -> None:
        """services: {service: container name}; all start in ``state`` (one-shots exited 0)."""
        data = {"services": {}}
        for svc, name in services.items():
            data["services"][svc] = {"name": name, "state": state, "exit_code": 0, "health": ""}
        self.save_project(project, data)
        self.set_all(project, state)

    def set_service(self, project: str, service: str, state: str, exit_code: int = 0, health: str = "") -> None:
        with self.locked():
            data = self.project(project)
            entry = data["services"][service]
            entry.update(state=state, exit_code=exit_code, health=health)
            self.save_project(project, data)

    def set_all(self, project: str, state: str, services: list[str] | None = None) -> None:
        """Start (state running) or stop (exited) services; one-shots run and exit 0."""
        with self.locked():
            data = self.project(project)
            for svc, entry in data["services"].items():
                if services and svc not in services:
                    continue
                if svc in ONE_SHOT_SERVICES:
                    entry.update(state="exited", exit_code=0)
                elif state == "running":
                    entry.update(state="running", exit_code=0)
                else:
                    entry.update(state="exited", exit_code=0)
            self.save_project(project, data)

    def set_service_env(self, project: str, service: str, **env: str) -> None:
        with self.locked():
            data = self.project(project)
            data["services"][service].setdefault("env", {}).update(env)
            self.save_project(project, data)

    def db_server(self, project: str, service: str = "db"):
        """The database server a compose project's `db` (or FM's `services`/`global-db`) plays."""
        from db_server import DbServer

        return DbServer(self, project, service, service)

    # ------------------------------------------------------------ compose sites volume
    def volume_bench(self, project: str) -> Path:
        """Host dir that plays /home/frappe/frappe-bench in a compose project's containers."""
        return self.dir / "volumes" / project

    def add_compose_site(self, project: str, site: str) -> None:
        site_dir = self.volume_bench(project) / "sites" / site
        (site_dir / "private" / "backups").mkdir(parents=True, exist_ok=True)
        (site_dir / "site_config.json").write_text(json.dumps({"db_name": "_" + site.replace(".", "")[:14]}))
        # frappe_docker's configurator service writes the bench-wide config (db_host, redis_*) before any site
        common = self.volume_bench(project) / "sites" / "common_site_config.json"
        if not common.exists():
            common.write_text(json.dumps({"db_host": "db", "db_port": 3306}, indent=1))

    # ------------------------------------------------------------ docker stats / info
    def set_container_stats(self, name: str, cpu_percent: float, memory_bytes: int) -> None:
        """What `docker stats` reports for one container (others get a figure derived from their name)."""
        with self.locked():
            stats = self._stats()
            stats[name] = {"cpu_percent": cpu_percent, "memory_bytes": memory_bytes}
            tmp = self.dir / "stats.json.tmp"
            tmp.write_text(json.dumps(stats))
            os.replace(tmp, self.dir / "stats.json")

    def _stats(self) -> dict:
        try:
            return json.loads((self.dir / "stats.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def container_stats(self, name: str) -> dict:
        """{"cpu_percent", "memory_bytes"} of a running container: set ones, else a steady figure from its name
        (whole MiB and hundredths of a percent, so the printed text loses nothing)."""
        chosen = self._stats().get(name)
        if chosen is not None:
            return chosen
        seed = sum(name.encode())
        return {"cpu_percent": (seed % 400) / 100, "memory_bytes": (40 + seed % 300) * 1024 * 1024}

    def running_containers(self) -> list[str]:
        """Names of the running containers of every project, as `docker stats` lists them."""
        names = []
        for path in sorted((self.dir / "projects").glob("*.json")):
            data = self.project(path.stem) or {"services": {}}
            for svc, entry in sorted(data["services"].items()):
                if entry["state"] == "running":
                    names.append(entry.get("name") or f"{path.stem}-{svc}-1")
        return names

    def services_named(self, container: str) -> list[str]:
        """The compose service names of a container (its network alias besides its name)."""
        out = []
        for path in sorted((self.dir / "projects").glob("*.json")):
            data = self.project(path.stem) or {"services": {}}
            out += [
                svc for svc, e in data["services"].items() if (e.get("name") or f"{path.stem}-{svc}-1") == container
            ]
        return out

    def set_docker_root(self, path: str) -> None:
        (self.dir / "docker-root.txt").write_text(path)

    def docker_root(self) -> str:
        try:
            return (self.dir / "docker-root.txt").read_text()
        except FileNotFoundError:
            root = self.dir / "docker-root"
            root.mkdir(exist_ok=True)
            return str(root)

    # ------------------------------------------------------------ local image store (`docker images`)
    def set_images(self, images: list[str]) -> None:
        """The images present locally, as "repository:tag" (FM's `start` refuses to run without its own)."""
        (self.dir / "images.json").write_text(json.dumps(sorted(set(images))))

    def images(self) -> list[str]:
        try:
            return json.loads((self.dir / "images.json").read_text())
        except (FileNotFoundError, ValueError):
            return []

    # ------------------------------------------------------------ service logs
    def log_file(self, project: str, service: str) -> Path:
        """What a service has written to its log: one `<RFC 3339 timestamp> <text>` line each."""
        return self.dir / "logs" / project / f"{service}.log"

    def write_log(self, project: str, service: str, *lines: str) -> None:
        """The service writes ``lines`` (as a container writes to stdout; `compose logs -f` shows them)."""
        path = self.log_file(project, service)
        path.parent.mkdir(parents=True, exist_ok=True)
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        data = "".join(f"{stamp} {line}\n" for line in lines).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    # ------------------------------------------------------------ hangs
    def hanging_pids(self) -> list[int]:
        d = self.dir / "hangs"
        return [int(p.name) for p in d.iterdir()] if d.is_dir() else []

    def release_hangs(self) -> None:
        """End every hang now: the sleeping doubles go on as if their time were up (SIGUSR1)."""
        import signal

        for pid in self.hanging_pids():
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass


def parse_compose_services(path: str) -> dict[str, str]:
    """Service names (and container_name where given) from a compose file, without a YAML parser."""
    services: dict[str, str] = {}
    in_services = False
    current = None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return services
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_services = line.strip() == "services:"
            continue
        if not in_services:
            continue
        if indent == 2 and line.strip().endswith(":"):
            current = line.strip()[:-1].strip("'\"")
            services[current] = ""
        elif current and line.strip().startswith("container_name:"):
            services[current] = line.split(":", 1)[1].strip().strip("'\"")
    return services


# ---------------------------------------------------------------- inside a container of a project

#: Where the bench is inside the containers: frappe_docker's backend, FM's frappe (and workers).
COMPOSE_CONTAINER_BENCH = "/home/frappe/frappe-bench"
FM_CONTAINER_BENCH = "/workspace/frappe-bench"


def fm_bench_dir(compose_files: list[str]) -> Path | None:
    """The FM bench a compose project belongs to: its main file is `<home>/sites/<bench>/docker-compose.yml`
    next to `bench_config.toml` (the workers file sits in the same dir)."""
    for f in compose_files:
        d = Path(f).resolve().parent
        if d.parent.name == "sites" and (d / "bench_config.toml").is_file():
            return d
    return None


def container_bench(world: DoubleWorld, project: str, compose_files: list[str]):
    """(host dir that plays the bench, its path in the container, the DbServer the bench uses).

    An FM bench bind-mounts `<bench>/workspace` at /workspace and uses FM's global-db (project
    `services`); a frappe_docker project keeps the bench in its sites volume and has its own `db`."""
    from db_server import DbServer

    bench = fm_bench_dir(compose_files)
    if bench is not None:
        return (
            bench / "workspace" / "frappe-bench",
            FM_CONTAINER_BENCH,
            DbServer(world, "services", "global-db", "global-db"),
        )
    return world.volume_bench(project), COMPOSE_CONTAINER_BENCH, DbServer(world, project, "db", "db")


#: Shell syntax the double does not run: a command using it is refused rather than half-run.
_SHELL_OPERATORS = {"&&", "||", "|", ";", "&", ">", ">>", "<", "(", ")"}


def shell_words(command: str) -> list[str] | None:
    """The words bash would run for `bash -c COMMAND` when COMMAND is one simple command (quotes
    removed as bash removes them); None when it uses operators, expansions or redirections."""
    import shlex

    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return None
    if any(w in _SHELL_OPERATORS for w in words) or "$" in command or "`" in command:
        return None
    return words


# ---------------------------------------------------------------- faults as seen by a double


def _scoped(value, project):
    """A fault value applies when it names no project or this one."""
    if isinstance(value, dict) and value.get("project") not in (None, project):
        return None
    return value


class _Released(Exception):
    pass


def _hang(marker: Path, key: str, seconds: float) -> None:
    """Sleep, or stop sleeping at SIGUSR1 (DoubleWorld.release_hangs): a test can hold a step exactly
    as long as it needs instead of guessing a duration the loaded machine may overrun.  The handler is
    in place before the marker shows the pid, so a release never finds the default (fatal) action."""
    import signal

    def release(signum, frame):
        raise _Released

    signal.signal(signal.SIGUSR1, release)
    marker.parent.mkdir(exist_ok=True)
    marker.write_text(key)
    print(f"(double: {key} hangs for {seconds} s)", file=sys.stderr, flush=True)
    try:
        time.sleep(seconds)
    except _Released:
        pass
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        marker.unlink(missing_ok=True)


def apply_faults(world: DoubleWorld, key: str, project: str | None = None) -> int | None:
    """Hang and/or fail as faults.json says for this step; returns an exit code to stop with."""
    import sys

    faults = world.faults()
    hang = faults.get("hang") or {}
    if isinstance(hang, list):
        hang = {k: 60 for k in hang}
    value = _scoped(hang.get(key), project)
    if value is not None:
        seconds = value.get("seconds", 60) if isinstance(value, dict) else value
        _hang(world.dir / "hangs" / str(os.getpid()), key, float(seconds))
    value = _scoped((faults.get("fail") or {}).get(key), project)
    if isinstance(value, dict) and "times" in value:
        # {"rc": 1, "times": N}: fail the next N calls only (a fault that heals, as for a roll-back).
        with world.locked():
            current = world.faults()
            entry = (current.get("fail") or {}).get(key)
            if not entry or entry.get("times", 0) <= 0:
                value = None
            else:
                entry["times"] -= 1
                world.set_faults(**current)
    if value is not None:
        if isinstance(value, dict):
            if value.get("stdout"):
                print(value["stdout"])
            print(value.get("stderr", f"(double: {key} fails)"), file=sys.stderr)
            return int(value.get("rc", 1))
        print(f"(double: {key} fails)", file=sys.stderr)
        return int(value)
    return None


# ---------------------------------------------------------------- bench inside a container


def bench_site_apps(bench) -> list[str]:
    return bench.bench_apps() or ["frappe", "erpnext"]


def run_bench(bench, args: list[str]) -> int:
    """Emulate the bench commands the agent uses.  ``args`` starts after `bench`."""
    import bench_site

    site, force = None, False
    while args and args[0] in ("--site", "--force"):
        if args[0] == "--force":
            force, args = True, args[1:]
        elif len(args) >= 2:
            site, args = args[1], args[2:]
        else:
            break
    if not args:
        print("Usage: bench [OPTIONS] COMMAND [ARGS]...", flush=True)
        return 2
    cmd, rest = args[0], args[1:]
    if cmd == "new-site":
        return bench_site.new_site(bench, rest)
    if cmd == "drop-site":
        return bench_site.drop_site(bench, rest)
    if site is None and cmd in (
        "backup",
        "migrate",
        "restore",
        "list-apps",
        "set-maintenance-mode",
        "scheduler",
        "set-config",
        "execute",
    ):
        print("Please specify --site sitename")
        return 1
    if cmd == "backup":
        return bench_site.backup(bench, site, "--with-files" in rest)
    if cmd == "migrate":
        return bench_site.migrate(bench, site)
    if cmd == "restore":
        return bench_site.restore(bench, site, rest, force)
    if cmd == "list-apps":
        return bench_site.list_apps(bench, site, rest)
    if cmd == "set-maintenance-mode":
        return bench_site.set_maintenance_mode(bench, site, rest)
    if cmd == "scheduler":
        return bench_site.scheduler(bench, site, rest)
    if cmd == "set-config":
        return bench_site.set_config(bench, site, rest)
    if cmd == "execute":
        return bench_site.execute(bench, site, rest)
    if cmd == "version" and site is None:
        return bench_version(bench, rest)
    if cmd == "update" and site is None:
        code = apply_faults(bench.world, "bench update", bench.project)
        if code is not None:
            return code
        print("$ git pull upstream version-15")
        print("Already up to date.")
        print("$ bench build")
        print("_  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _  _")
        print("Bench updated successfully")
        return 0
    print(f"Error: No such command '{cmd}'.")
    return 2


def bench_version(bench, args: list[str]) -> int:
    """`bench version --format json` as frappe prints it: `json.dumps(data, indent=4)` of the apps in name
    order, each `{"commit", "app", "branch", "version"}`; commit is the checkout's short sha, "" for an app
    that is not a git checkout.  A test sets an app's commit in `apps/<app>/.commit` (an empty file: no
    checkout); the fault `bench_warnings: [lines]` prints warning lines first, as a bench with a
    deprecated setting does."""
    if "--format" not in args or args[args.index("--format") + 1 :][:1] != ["json"]:
        print("Error: the double only prints `bench version --format json`")
        return 2
    for line in bench.world.faults().get("bench_warnings") or []:
        print(line)
    rows = []
    for app in sorted(bench_site_apps(bench)):
        marker = bench.root / "apps" / app / ".commit"
        commit = marker.read_text().strip() if marker.is_file() else hashlib.sha1(app.encode()).hexdigest()[:7]
        rows.append({"commit": commit, "app": app, "branch": "version-15", "version": "15.0.0"})
    print(json.dumps(rows, indent=4))
    return 0


def container_ip(name: str) -> str:
    """The address docker gave a container on its network (stable per name; what MariaDB sees it connect from)."""
    import hashlib

    digest = hashlib.sha256(name.encode()).digest()
    return f"172.18.{digest[0]}.{digest[1] % 250 + 2}"


def run_in_container(
    world: DoubleWorld,
    bench_root: Path,
    container_root: str,
    args: list[str],
    project: str | None,
    db=None,
    client: str | None = None,
) -> int:
    """A command exec'd in the bench container: bench, find, cat, mkdir, chown, mv, rm.

    ``db`` is the DbServer the bench uses (a compose project's `db`, FM's `global-db`); ``client`` the
    container's address, which the database sees bench's connections come from.
    """
    import bench_site
    from db_server import DbServer

    if not args:
        return 1
    if os.path.basename(args[0]) == "bench":
        db = db or DbServer(world, project or "", "db", "db")
        return run_bench(bench_site.Bench(world, bench_root, container_root, project, db, client), args[1:])
    if args[0] == "find":
        code = apply_faults(world, "find", project)
        if code is not None:
            return code
        return _find(bench_root, args[1:])
    if args[0] in ("cat", "mkdir", "chown", "rm", "mv"):
        return _file_command(bench_root, container_root, args)
    if args[0] == "stat":
        code = apply_faults(world, "stat", project)
        if code is not None:
            return code
        return _stat(bench_root, container_root, args[1:])
    print(
        f'OCI runtime exec failed: exec failed: unable to start container process: exec: "{args[0]}": '
        "executable file not found in $PATH: unknown"
    )
    return 126


_FILE_TYPES = ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "fifo"))


def _stat(bench_root: Path, container_root: str, args: list[str]) -> int:
    """GNU `stat -c FORMAT -- PATH...` (lstat: a symlink is reported, not followed) with %F, %s and %n."""
    fmt = args[args.index("-c") + 1]
    paths = args[args.index("--") + 1 :]
    code = 0
    for path in paths:
        rel = os.path.relpath(path, container_root) if os.path.isabs(path) else path
        host = bench_root / rel
        try:
            if rel.startswith(".."):
                raise FileNotFoundError
            st = os.lstat(host)
        except FileNotFoundError:
            print(f"stat: cannot statx '{path}': No such file or directory", file=sys.stderr)
            code = 1
            continue
        kind = next((name for test, name in _FILE_TYPES if test(st.st_mode)), None)
        if kind is None:
            kind = "regular empty file" if stat.S_ISREG(st.st_mode) and not st.st_size else "regular file"
        print(fmt.replace("%F", kind).replace("%s", str(st.st_size)).replace("%n", path))
    return code


def _file_command(bench_root: Path, container_root: str, args: list[str]) -> int:
    """cat FILE, mkdir -p DIR, chown -R U:G PATH (ownership is not modelled), mv -f SRC DST (a rename),
    rm -rf PATH, inside the bench."""
    import shutil

    paths = [a for a in args[1:] if not a.startswith("-")]
    if args[0] == "chown":
        paths = paths[1:]
    hosts = []
    for path in paths:
        full = path if path.startswith("/") else f"{container_root}/{path}"
        if not full.startswith(container_root + "/") or ".." in full.split("/"):
            print(f"{args[0]}: cannot access '{path}': Permission denied")
            return 1
        hosts.append(bench_root / full[len(container_root) + 1 :])
    if args[0] == "mv":
        if len(hosts) != 2 or not hosts[0].exists():
            print(f"mv: cannot stat '{paths[0] if paths else ''}': No such file or directory")
            return 1
        os.replace(hosts[0], hosts[1])
        return 0
    for host, path in zip(hosts, paths):
        if args[0] == "cat":
            if not host.is_file():
                print(f"cat: {path}: No such file or directory")
                return 1
            sys.stdout.write(host.read_text())
        elif args[0] == "mkdir":
            host.mkdir(parents=True, exist_ok=True)
        elif args[0] == "rm":
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            elif host.exists() or host.is_symlink():
                host.unlink()
        elif not host.exists():
            print(f"chown: cannot access '{path}': No such file or directory")
            return 1
    sys.stdout.flush()
    return 0


def _find(bench_root: Path, args: list[str]) -> int:
    """The two find forms the agent uses (site list, recent backup files)."""
    start = args[0]
    base = bench_root / start
    if not base.is_dir():
        print(f"find: '{start}': No such file or directory")
        return 1
    opts = dict(zip(args[1::2], args[2::2]))
    mindepth = int(opts.get("-mindepth", 0))
    maxdepth = int(opts.get("-maxdepth", 99))
    pattern = opts.get("-name")
    mmin = opts.get("-mmin")
    import fnmatch

    for root, dirs, files in os.walk(base):
        depth = len(Path(root).relative_to(base).parts)
        for name in sorted(files):
            d = depth + 1
            if d < mindepth or d > maxdepth:
                continue
            if pattern and not fnmatch.fnmatch(name, pattern):
                continue
            full = Path(root) / name
            if mmin and mmin.startswith("-") and time.time() - full.stat().st_mtime > 60 * int(mmin[1:]):
                continue
            print(str(Path(start) / full.relative_to(base)))
        if depth + 1 >= maxdepth:
            dirs[:] = []
    return 0
