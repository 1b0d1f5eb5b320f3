"""The host's own load for the dashboard's host panel (``GET /host``).

Load average and memory come from ``/proc`` (no process started); free space from statvfs of
the backups' base path and of docker's data root (asked once from ``docker info`` and kept, as it
changes only when the daemon is reconfigured); per-stack CPU and memory add up ``docker stats``
(cached) over the containers the stack's cached status lists.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time

from fmappliance.agent.container_stats import ContainerStats
from fmappliance.agent.runner import resolve_binary, run_command

log = logging.getLogger(__name__)


def read_load_average(proc_root: str) -> list[float]:
    """The 1, 5 and 15 minute load averages from <proc>/loadavg."""
    with open(os.path.join(proc_root, "loadavg"), encoding="ascii") as fh:
        return [float(x) for x in fh.read().split()[:3]]


def read_memory(proc_root: str) -> dict:
    """Total, available and used bytes from <proc>/meminfo; used = MemTotal - MemAvailable (what `free` shows)."""
    fields = {}
    with open(os.path.join(proc_root, "meminfo"), encoding="ascii") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if key in ("MemTotal", "MemAvailable", "MemFree", "Buffers", "Cached") and parts:
                fields[key] = int(parts[0]) * 1024  # meminfo counts kB (KiB)
    total = fields["MemTotal"]
    # Kernels before 3.14 have no MemAvailable: estimate it as free + buffers + page cache.
    available = fields.get(
        "MemAvailable", fields.get("MemFree", 0) + fields.get("Buffers", 0) + fields.get("Cached", 0)
    )
    return {"total_bytes": total, "available_bytes": available, "used_bytes": total - available}


def disk_free(name: str, path: str | None, reason: str | None = None) -> dict:
    entry: dict[str, object] = {"name": name, "path": path, "free_bytes": None, "total_bytes": None, "reason": reason}
    if path is None:
        return entry
    try:
        usage = shutil.disk_usage(path)
    except OSError as exc:
        entry["reason"] = f"cannot read free space of {path}: {exc.strerror or exc}"
        return entry
    entry.update(free_bytes=usage.free, total_bytes=usage.total)
    return entry


class DockerRoot:
    """docker's data root (``DockerRootDir``): asked once; a failure is retried after ``retry_seconds``."""

    def __init__(self, docker_binary: str, timeout: float, *, retry_seconds: float = 60.0, clock=time.monotonic):
        self.docker = docker_binary
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._path: str | None = None
        self._failure: tuple[float, str] | None = None

    def get(self) -> tuple[str | None, str | None]:
        """(path, None) or (None, why it is unknown)."""
        with self._lock:
            if self._path is not None:
                return self._path, None
            if self._failure and self._failure[0] > self._clock():
                return None, self._failure[1]
            path, reason = self._ask()
            if path is not None:
                self._path = path
            else:
                self._failure = (self._clock() + self.retry_seconds, reason)
            return path, reason

    def _ask(self) -> tuple[str | None, str]:
        docker = resolve_binary(self.docker)
        if docker is None:
            return None, f"docker not found ({self.docker!r} is not on PATH or not executable)"
        result = run_command([docker, "info", "--format", "{{.DockerRootDir}}"], timeout=self.timeout)
        lines = [ln.strip() for ln in result.output.splitlines() if ln.strip()]
        if result.ok and lines and os.path.isabs(lines[-1]):
            return lines[-1], ""
        reason = "docker info " + (
            f"did not answer within {self.timeout} s" if result.timed_out else "gave no data root"
        )
        if lines:
            reason += ": " + lines[-1][:200]
        log.warning("docker's data root is unknown: %s", reason)
        return None, reason


class HostFacts:
    """Everything the host panel shows, in one JSON-ready dict."""

    def __init__(self, config: dict, *, status, store, proc_root: str = "/proc"):
        self.status = status
        self.store = store
        self.proc_root = proc_root
        self.containers = ContainerStats(config)
        self.docker_root = DockerRoot(config["agent"]["docker_binary"], config["agent"]["status_timeout"])

    def _backups_disk(self) -> dict:
        entry = {
            "name": "backups",
            "path": self.store.base_path,
            "free_bytes": None,
            "total_bytes": None,
            "reason": None,
        }
        try:
            usage = self.store.disk_usage()  # base_path may not exist yet: it measures the nearest parent
        except OSError as exc:
            entry["reason"] = f"cannot read free space of {self.store.base_path}: {exc.strerror or exc}"
            return entry
        entry.update(free_bytes=usage["free_bytes"], total_bytes=usage["total_bytes"])
        return entry

    def snapshot(self) -> dict:
        stats = self.containers.snapshot()
        root, root_reason = self.docker_root.get()
        stacks = []
        for stack in self.status.all():
            running = [s["name"] for s in stack.get("services") or () if s.get("state") == "running"]
            figures = [stats["containers"][n] for n in running if n in stats["containers"]]
            cpu = [f["cpu_percent"] for f in figures if f["cpu_percent"] is not None]
            in_use = [f["memory_bytes"] for f in figures if f["memory_bytes"] is not None]
            stacks.append(
                {
                    "name": stack["name"],
                    "containers": len(figures),
                    "cpu_percent": round(sum(cpu), 2) if cpu else None,
                    "memory_bytes": sum(in_use) if in_use else None,
                }
            )
        try:
            load, memory = read_load_average(self.proc_root), read_memory(self.proc_root)
        except (OSError, ValueError, KeyError) as exc:  # not Linux, or /proc hidden from the service
            log.warning("cannot read load and memory from %s: %s", self.proc_root, exc)
            load, memory = None, None
        return {
            "load_average": load,
            "cpu_count": os.cpu_count(),
            "memory": memory,
            "disks": [self._backups_disk(), disk_free("docker", root, root_reason or None)],
            "stacks": stacks,
            "stats_checked_at": stats["checked_at"],
            "stats_reason": stats["reason"],
        }
