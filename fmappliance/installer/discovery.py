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

from fmappliance.installer.trust import untrusted_reason
from fmappliance.names import is_valid_stack_name

NEW_AGENT_USER = "fm-agent"


class InstallerStop(Exception):
    """The installer must stop; ``str()`` is the sentence for the operator."""


@dataclass
class AgentUser:
    name: str
    reason: str
    uid: int | None = None  # None: does not exist yet (created by the installer)
    home: str = ""


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


def may_use_docker(user: str, runtime_base: str = "/run/user") -> bool:
    """Root, a member (primary or supplementary) of the docker group, or the owner of a rootless
    docker daemon (``<runtime_base>/<uid>/docker.sock``): making such a user the agent's grants
    it nothing it does not have."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return False
    if entry.pw_uid == 0 or rootless_docker_socket(entry.pw_uid, runtime_base):
        return True
    try:
        docker = grp.getgrnam("docker")
    except KeyError:
        return False
    return entry.pw_gid == docker.gr_gid or user in docker.gr_mem


def rootless_docker_socket(uid: int, runtime_base: str = "/run/user") -> str:
    """The user's own rootless docker socket, or ""."""
    path = os.path.join(runtime_base, str(uid), "docker.sock")
    try:
        st = os.lstat(path)
    except OSError:
        return ""
    return path if stat.S_ISSOCK(st.st_mode) and st.st_uid == uid else ""


def choose_agent_user(
    homes: list[str], requested: str = "", recorded: str = "", runtime_base: str = "/run/user"
) -> AgentUser:
    """The agent's user: asked for, else kept from the first install, else derived safely."""
    if requested:
        if recorded and recorded != requested:
            return _resolved(requested, f"FM_AGENT_USER; changed from {recorded} as asked")
        return _resolved(requested, "FM_AGENT_USER")
    if recorded:
        return _resolved(recorded, "kept from the first install; FM_AGENT_USER=<user> changes it")
    owners: dict[str, list[str]] = {}
    for home in homes:
        owners.setdefault(_owner(home), []).append(home)
    if not owners:
        return _resolved(NEW_AGENT_USER, "no Frappe Manager home found")
    if len(owners) > 1:
        found = "; ".join(f"{user}: {', '.join(paths)}" for user, paths in sorted(owners.items()))
        raise InstallerStop(
            f"Frappe Manager homes of several users were found ({found}). The agent runs with docker rights "
            f"(root-equivalent), so the installer will not pick one: run it again as "
            f"sudo FM_AGENT_USER=<user> {os.environ.get('FM_INSTALLER', './install.sh')}"
        )
    user, paths = next(iter(owners.items()))
    if not may_use_docker(user, runtime_base):
        raise InstallerStop(
            f"the Frappe Manager home {paths[0]} belongs to {user}, who is not allowed to use docker yet; the installer "
            f"does not make a user root-equivalent on its own. If {user} should run the agent, run it again as "
            f"sudo FM_AGENT_USER={user} {os.environ.get('FM_INSTALLER', './install.sh')}"
        )
    return _resolved(user, f"owner of the Frappe Manager home {paths[0]}")


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
    return next(iter(accepted.values()), ""), notes
