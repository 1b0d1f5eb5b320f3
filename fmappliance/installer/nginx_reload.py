"""Reload nginx and make sure it took the new configuration.

``nginx -t`` checks a configuration on its own; some configurations pass it and are still refused
by the running master, e.g. a ``limit_req_zone`` whose key differs from the one the running zone
was made with.  nginx then logs ``[emerg]`` and keeps serving the previous configuration, while
``nginx -s reload`` and ``systemctl reload nginx`` (which only send SIGHUP) exit 0.

What really shows a reload took: the master starts new worker processes for every configuration
it accepts, and starts none for one it refuses.  So: the master's children before the reload,
then wait until a child that was not there appears (taken), or the master logs an ``[emerg]`` of
its own, or the time is up (refused).  The master's pid comes from its pid file; its children from
/proc: no signal beyond the reload itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from fmappliance.installer.discovery import InstallerStop


def master_pid(pid_file: str) -> int:
    try:
        with open(pid_file, encoding="ascii") as fh:
            pid = int(fh.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        raise InstallerStop(f"nginx is not running (no live master in {pid_file}): nothing to reload") from None
    return pid


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (nginx's workers, cache manager and loader)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[0] != "Z" and fields[1] == str(pid):
            found.add(int(entry))
    return found


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def emerg_lines(error_log: str, offset: int, pid: int) -> list[str]:
    """The master's ``[emerg]`` messages written to error_log after offset (without date and pid)."""
    if not error_log:
        return []
    try:
        with open(error_log, "rb") as fh:
            fh.seek(offset)
            text = fh.read(1 << 20).decode("utf-8", errors="replace")
    except OSError:
        return []
    pattern = re.compile(rf"\[emerg\] {pid}#\d+: (.*)")
    return [m.group(1).strip() for m in map(pattern.search, text.splitlines()) if m]


def reload(command: list[str], pid_file: str, error_log: str = "", timeout: float = 10.0) -> str:
    """Run ``command`` (the reload) and wait until nginx's master has taken the new configuration.

    Returns a line for the operator; raises InstallerStop with the reason when the reload did not
    take (the master still serves the previous configuration then).
    """
    pid = master_pid(pid_file)
    before = children(pid)
    offset = _size(error_log)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise InstallerStop(
            f"{' '.join(command)} failed (exit status {proc.returncode}: {said[-1] if said else 'no message'});"
            " nginx keeps serving its previous configuration"
        )
    deadline = time.monotonic() + timeout
    while True:
        new = children(pid) - before
        if new:
            return f"nginx took the new configuration (new workers: {' '.join(map(str, sorted(new)))})"
        emerg = emerg_lines(error_log, offset, pid)
        if emerg or time.monotonic() >= deadline:
            break
        try:
            os.kill(pid, 0)
        except OSError:
            raise InstallerStop(f"nginx's master (pid {pid}) ended during the reload; see {error_log}") from None
        time.sleep(0.05)
    why = (
        f"it logged: {emerg[0]}" if emerg else f"no new worker within {timeout:g} s; see {error_log or 'its error log'}"
    )
    raise InstallerStop(f"nginx refused the new configuration and keeps serving the previous one ({why})")
