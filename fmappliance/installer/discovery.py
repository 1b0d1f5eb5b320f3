"""Who the agent runs as, which stacks it operates and which ``fm`` it runs.

The agent gets docker rights (root-equivalent), so none of this may be decided by a file an
ordinary user could plant: with several candidate users the operator must choose
(``FM_AGENT_USER``); a lone candidate must already be allowed to use docker; compose files
and the ``fm`` binary count only when :func:`untrusted_reason` finds nobody else can change
them; and the first choice is kept on later runs (the install record) unless the operator
asks for another.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass, field

from fmappliance.installer.trust import untrusted_reason, user_name
from fmappliance.wire import is_valid_stack_name

NEW_AGENT_USER = "fm-agent"


class InstallerStop(Exception):
    """The installer must stop; ``str()`` is the sentence for the operator."""


@dataclass
class AgentUser:
    name: str
    reason: str
    uid: int | None = None  # None: does not exist yet (created by the installer)
    home: str = ""
    rootless_socket: str = ""  # the user's own rootless docker (checked), used instead of the docker group
    add_to_docker_group: bool = False  # only for a user named explicitly, or the installer's own fm-agent


@dataclass
class Discovery:
    stacks: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)


# ------------------------------------------------------------------------------ FM homes


def find_fm_homes(search: str, frappe_manager_home: str = "") -> list[str]:
    """FM homes (``<dir>/frappe`` with ``sites/*/docker-compose.yml``) under the search globs."""
    homes: list[str] = []
    if frappe_manager_home and os.path.isdir(os.path.join(frappe_manager_home, "sites")):
        homes.append(os.path.normpath(frappe_manager_home))
    for pattern in search.split():
        for base in sorted(glob.glob(pattern)):
            candidate = os.path.join(base, "frappe")
            if glob.glob(os.path.join(glob.escape(candidate), "sites", "*", "docker-compose.yml")):
                if os.path.normpath(candidate) not in homes:
                    homes.append(os.path.normpath(candidate))
    return homes


def _owner(path: str) -> str:
    uid = os.stat(path).st_uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def may_use_docker(user: str) -> bool:
    """Root or a member (primary or supplementary) of the docker group: making such a user the
    agent's grants it nothing it does not have.  A socket at ``/run/user/<uid>/docker.sock``
    is no evidence: any user can bind one (see :func:`rootless_peer_problem`)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    if entry.pw_uid == 0:
        return True
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        return False
    return entry.pw_gid == docker.gr_gid or user in docker.gr_mem


def rootless_socket_path(uid: int, runtime_base: str = "/run/user") -> str:
    """``<runtime_base>/<uid>/docker.sock`` when a socket owned by ``uid`` is there, else ""."""
    path = os.path.join(runtime_base, str(uid), "docker.sock")
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    return path if stat.S_ISSOCK(st.st_mode) and st.st_uid == uid else ""


#: What listens on a real rootless docker socket: dockerd (started by rootlesskit).
ROOTLESS_DAEMONS = ("dockerd", "rootlesskit")


def rootless_peer_problem(path: str, uid: int) -> str | None:
    """None when the process listening on ``path`` runs as ``uid`` and is a root-owned dockerd or
    rootlesskit binary that nobody else can change; else why not.

    The socket's owner proves nothing (a plain ``bind()`` makes one); the kernel's word on the
    peer (``SO_PEERCRED``) and the peer's executable do.
    """
    import socket
    import struct

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(path)
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        return f"nothing answers on {path} ({exc.strerror or exc})"
    pid, peer_uid, _gid = struct.unpack("3i", creds)
    if peer_uid != uid:
        return f"the process on {path} runs as {user_name(peer_uid)}, not as its owner"
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        return f"the program of the process on {path} (pid {pid}) cannot be read: {exc.strerror}"
    exe = exe.removesuffix(" (deleted)")
    if os.path.basename(exe) not in ROOTLESS_DAEMONS:
        return f"the process on {path} is {exe}, not dockerd or rootlesskit"
    problem = untrusted_reason(exe, None)
    if problem:
        return f"the program on {path} ({exe}) is not root's alone: {problem}"
    return None


def choose_agent_user(
    homes: list[str],
    requested: str = "",
    recorded: str = "",
    runtime_base: str = "/run/user",
    recorded_explicit: bool = False,
) -> AgentUser:
    """The agent's user: asked for, else kept from the first install, else derived safely.

    ``recorded_explicit``: the recorded user was named with FM_AGENT_USER back then, so what
    only an explicit choice allows (root, a rootless docker) stays allowed on later runs.
    """
    installer = os.environ.get("FM_INSTALLER", "./install.sh")
    if requested:
        reason = "FM_AGENT_USER"
        if recorded and recorded != requested:
            reason = f"FM_AGENT_USER; changed from {recorded} as asked"
        return _with_docker_access(_resolved(requested, reason), True, runtime_base)
    if recorded:
        kept = _resolved(recorded, "kept from the first install; FM_AGENT_USER=<user> changes it")
        if recorded == "root" and not recorded_explicit:
            raise InstallerStop(_root_refusal(installer))
        return _with_docker_access(kept, recorded_explicit, runtime_base)
    owners: dict[str, list[str]] = {}
    for home in homes:
        owners.setdefault(_owner(home), []).append(home)
    if not owners:
        return _with_docker_access(_resolved(NEW_AGENT_USER, "no Frappe Manager home found"), True, runtime_base)
    if len(owners) > 1:
        found = "; ".join(f"{user}: {', '.join(paths)}" for user, paths in sorted(owners.items()))
        raise InstallerStop(
            f"Frappe Manager homes of several users were found ({found}). The agent runs with docker rights "
            f"(root-equivalent), so the installer will not pick one: run it again as "
            f"sudo FM_AGENT_USER=<user> {installer}"
        )
    user, paths = next(iter(owners.items()))
    if user == "root":
        raise InstallerStop(_root_refusal(installer))
    entry = _resolved(user, f"owner of the Frappe Manager home {paths[0]}")
    if entry.uid is not None and rootless_socket_path(entry.uid, runtime_base):
        raise InstallerStop(
            f"{user} (owner of {paths[0]}) seems to run a rootless docker; the installer never chooses the agent "
            f"user from that, so if {user} should run the agent, run it again as sudo FM_AGENT_USER={user} {installer}"
        )
    if not may_use_docker(user):
        raise InstallerStop(
            f"the Frappe Manager home {paths[0]} belongs to {user}, who is not allowed to use docker yet; the installer "
            f"does not make a user root-equivalent on its own. If {user} should run the agent, run it again as "
            f"sudo FM_AGENT_USER={user} {installer}"
        )
    # Already in the docker group: nothing is added (the installer never adds a user it chose itself).
    return _with_docker_access(entry, False, runtime_base)


def _root_refusal(installer: str) -> str:
    return (
        "the agent would run as root: every command it runs (fm, docker compose, bench) and every file it "
        "writes in a bench that containers can change would then act with full rights on this host, so the "
        "installer does not do that on its own; a dedicated user is better (FM_AGENT_USER=<user>), or say so "
        f"explicitly: sudo FM_AGENT_USER=root {installer}"
    )


def _with_docker_access(user: AgentUser, explicit: bool, runtime_base: str) -> AgentUser:
    """How the agent reaches docker: the user's own rootless daemon (only when the user was named
    explicitly, and only after its peer check), else the docker group (added only for a user named
    explicitly or the installer's own ``fm-agent``)."""
    sock = rootless_socket_path(user.uid, runtime_base) if user.uid is not None else ""
    if sock and explicit:
        problem = rootless_peer_problem(sock, user.uid)  # type: ignore[arg-type]
        if problem:
            raise InstallerStop(
                f"{sock} is not a rootless docker daemon of {user.name}: {problem}; stop whatever made it, "
                f"or remove it, and run the installer again"
            )
        user.rootless_socket = sock
        return user
    user.add_to_docker_group = explicit or user.name == NEW_AGENT_USER
    return user


def _resolved(name: str, reason: str) -> AgentUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return AgentUser(name, reason)
    return AgentUser(name, reason, entry.pw_uid, entry.pw_dir)


# ------------------------------------------------------------------------------ stacks


def _stack_name(name: str, taken: dict) -> str | None:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", name).strip("-.")[:63] or "stack"
    name = name.replace("..", ".")
    base, n = name, 2
    while name in taken:
        name = f"{base[:60]}-{n}"
        n += 1
    return name if is_valid_stack_name(name) else None


def looks_like_frappe_docker(files: list[str]) -> bool:
    text = ""
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text += fh.read()
        except OSError:
            return False
    has_services = re.search(r"^\s+backend:", text, re.M) and re.search(r"^\s+frontend:", text, re.M)
    return bool(has_services or re.search(r"image:\s*\S*frappe/(erpnext|frappe)", text))


def discover_stacks(homes: list[str], compose_projects: list, agent_uid: int | None) -> Discovery:
    """fm benches of trusted FM homes and frappe_docker-like compose projects with trusted files."""
    found = Discovery()

    def add(name: str, entry: dict) -> None:
        chosen = _stack_name(name, found.stacks)
        if chosen:
            found.stacks[chosen] = entry

    for home in homes:
        for compose in sorted(glob.glob(os.path.join(glob.escape(home), "sites", "*", "docker-compose.yml"))):
            problem = untrusted_reason(compose, agent_uid)
            if problem:
                found.notes.append(f"skipped {compose}: {problem}")
                continue
            bench = os.path.dirname(compose)
            add(os.path.basename(bench), {"type": "fm", "path": bench})
    home_prefixes = tuple(h.rstrip("/") + "/" for h in homes)
    for project in compose_projects if isinstance(compose_projects, list) else []:
        if not isinstance(project, dict):
            continue
        files = [f for f in str(project.get("ConfigFiles", "")).split(",") if f]
        if not files or any(f.startswith(home_prefixes) for f in files):
            continue  # an fm bench is a compose project too: it is handled above
        problems = [p for p in (untrusted_reason(f, agent_uid) for f in files) if p]
        if problems:
            found.notes.append(f"skipped compose project {project.get('Name')}: {problems[0]}")
            continue
        if not looks_like_frappe_docker(files):
            continue
        path = os.path.dirname(files[0])
        entry = {"type": "compose", "path": path, "project": project.get("Name")}
        rel = [os.path.relpath(f, path) for f in files]
        if rel not in (["compose.yaml"], ["docker-compose.yml"]):
            entry["files"] = rel
        add(str(project.get("Name") or os.path.basename(path)), entry)
    return found


# ------------------------------------------------------------------------------ fm binary


def find_fm_binary(explicit: str, agent: AgentUser, on_path: str = "") -> tuple[str, list[str]]:
    """The ``fm`` the agent runs ("" for none) and notes on the candidates that were refused."""
    if explicit:
        problem = untrusted_reason(explicit, agent.uid)
        if problem:
            raise InstallerStop(f"FM_BINARY={explicit} cannot be used: {problem}")
        if not os.access(explicit, os.X_OK):
            raise InstallerStop(f"FM_BINARY={explicit} is not an executable file")
        return explicit, []
    candidates = [on_path] if on_path else []
    if agent.home:
        candidates.append(os.path.join(agent.home, ".local", "bin", "fm"))
    candidates += ["/usr/local/bin/fm", "/usr/bin/fm"]
    notes: list[str] = []
    accepted: dict[str, str] = {}  # real path -> first path seen
    for path in candidates:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        problem = untrusted_reason(path, agent.uid)
        if problem:
            notes.append(f"not using {path}: {problem}")
            continue
        accepted.setdefault(os.path.realpath(path), path)
    if len(accepted) > 1:
        raise InstallerStop(
            f"several fm commands were found ({', '.join(accepted.values())}): choose the one the agent runs with "
            f"sudo FM_BINARY=<path> {os.environ.get('FM_INSTALLER', './install.sh')}"
        )
    chosen = next(iter(accepted.values()), "")
    return (prefer_fmx(chosen, agent) if chosen else ""), notes


def prefer_fmx(fm: str, agent: AgentUser) -> str:
    """Frappe Manager 0.20 installs ``fmx`` beside ``fm`` (invoked as ``fm`` it prints a rename
    warning on every run): the agent runs ``fmx`` when it is there and as trustworthy."""
    fmx = os.path.join(os.path.dirname(fm), "fmx")
    if os.path.isfile(fmx) and os.access(fmx, os.X_OK) and untrusted_reason(fmx, agent.uid) is None:
        return fmx
    return fm


def checked_docker_binary(path: str, agent: AgentUser) -> tuple[str, list[str]]:
    """The docker the installer checked, as the absolute ``agent.docker_binary`` of a new config
    ("" when there is none or someone else could change it: then the agent looks docker up on PATH)."""
    if not path:
        return "", []
    path = os.path.abspath(path)
    problem = untrusted_reason(path, agent.uid)
    if problem:
        return "", [f"agent.docker_binary is not set to {path}: {problem}"]
    return path, []
