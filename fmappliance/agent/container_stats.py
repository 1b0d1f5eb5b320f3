"""CPU and memory of the running containers, from ``docker stats --no-stream --format json``.

One call covers every container on the host; its answer is cached for
``agent.status_cache_seconds`` like the stack status, and two requests that need it at the same
moment share one call.  ``docker stats --no-stream`` samples twice to compute CPU, so it takes a
second or two: never call it per request without the cache.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time

from fmappliance.agent.runner import resolve_binary, run_command
from fmappliance.agent.status import DAEMON_DOWN_MARKERS
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

#: docker prints sizes as go-units does: binary units (and decimal ones in older releases).
_UNITS = {
    "b": 1,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "pib": 1024**5,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "pb": 1000**5,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", re.IGNORECASE | re.ASCII)
_MAX_OUTPUT = 2_000_000


def parse_size(text: str) -> int | None:
    """'52.16MiB' -> bytes; None for '--' or anything else docker prints when it has no figure."""
    match = _SIZE.fullmatch(text or "")
    if not match or match.group(2).lower() not in _UNITS:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_percent(text: str) -> float | None:
    """'1.25%' -> 1.25; None for '--'."""
    try:
        return float((text or "").strip().rstrip("%"))
    except ValueError:
        return None


def parse_stats(output: str) -> dict[str, dict]:
    """{container name: {"cpu_percent", "memory_bytes"}} from the JSON lines (other lines are skipped)."""
    found = {}
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        name = row.get("Name") if isinstance(row, dict) else None
        if not isinstance(name, str) or not name:
            continue
        usage = str(row.get("MemUsage") or "").split("/")[0]
        found[name.lstrip("/")] = {
            "cpu_percent": parse_percent(str(row.get("CPUPerc") or "")),
            "memory_bytes": parse_size(usage),
        }
    return found


class ContainerStats:
    """``docker stats`` for every running container, cached for ``agent.status_cache_seconds``."""

    def __init__(self, config: dict, *, clock=time.monotonic):
        self.docker = config["agent"]["docker_binary"]
        self.ttl = config["agent"]["status_cache_seconds"]
        self.timeout = config["agent"]["status_timeout"]
        self._clock = clock
        self._lock = threading.Lock()  # one docker stats at a time; later callers reuse its answer
        self._cached: tuple[float, dict] | None = None

    def snapshot(self) -> dict:
        """{"containers": {name: {...}}, "checked_at", "reason"} (reason says why figures are missing)."""
        with self._lock:
            if self._cached and self._cached[0] > self._clock():
                return self._cached[1]
            answer = self._ask_docker()
            if self.ttl > 0:
                self._cached = (self._clock() + self.ttl, answer)
            return answer

    def _ask_docker(self) -> dict:
        answer: dict = {"containers": {}, "checked_at": format_timestamp(), "reason": None}
        docker = resolve_binary(self.docker)
        if docker is None:
            answer["reason"] = f"docker not found ({self.docker!r} is not on PATH or not executable)"
            return answer
        result = run_command(
            [docker, "stats", "--no-stream", "--format", "json"], timeout=self.timeout, max_output=_MAX_OUTPUT
        )
        if result.timed_out:
            answer["reason"] = f"docker stats did not answer within {self.timeout} s"
        elif not result.ok:
            text = result.output.strip()
            line = next((ln for ln in text.splitlines() if any(m in ln for m in DAEMON_DOWN_MARKERS)), None)
            last = text.splitlines()[-1].strip() if text else ""
            answer["reason"] = (
                ("docker daemon not reachable: " + line.strip())
                if line
                else "docker stats failed: "
                + (result.error or f"exit code {result.exit_code}")
                + (f": {last}" if last else "")
            )
        else:
            answer["containers"] = parse_stats(result.output)
        if answer["reason"]:
            log.warning("container figures unavailable: %s", answer["reason"])
        return answer
