"""``fm-agent.pyz installer supervise``: keep one service running where there is no systemd.

install.sh starts one supervisor per service in daemon mode (containers, WSL).  It runs the
service's command, writes the service's output to its log file and rotates that file by size
(``--max-bytes``, ``--keep`` old files: log.1 is the newest), and starts the service again
when it ends, waiting longer after each quick crash (1 s, 2 s, 4 s … up to ``--max-delay``;
back to 1 s once a run lasted ``--stable`` seconds).  Exit status 2 is a config error, as in
the systemd units (``RestartPreventExitStatus=2``): starting again cannot fix it, so the
supervisor stops with the service.  SIGTERM or SIGINT stop the service (TERM, then KILL after
10 s) and then the supervisor.  Standard library only: it is the thing that must not crash.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

CONFIG_ERROR_STATUS = 2
STOP_GRACE_SECONDS = 10


class RotatingLog:
    """Append-only log file, rotated to ``<path>.1`` … ``<path>.<keep>`` before it would pass ``max_bytes``."""

    def __init__(self, path: str, max_bytes: int, keep: int):
        self.path, self.max_bytes, self.keep = path, max(int(max_bytes), 1024), max(int(keep), 1)
        self.lock = threading.Lock()
        self.fh = self._open()

    def _open(self):
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return os.fdopen(fd, "ab", buffering=0)

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.fh.tell() and self.fh.tell() + len(data) > self.max_bytes:
                self._rotate()
            self.fh.write(data)

    def _rotate(self) -> None:
        self.fh.close()
        for n in range(self.keep - 1, 0, -1):
            older = f"{self.path}.{n}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")
        self.fh = self._open()

    def say(self, text: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.write(f"{stamp} supervise: {text}\n".encode())


class Supervisor:
    def __init__(self, name: str, argv: list[str], log: RotatingLog, child_pidfile: str = "", **timing):
        self.name, self.argv, self.log, self.child_pidfile = name, argv, log, child_pidfile
        self.max_delay = float(timing.get("max_delay", 60))
        self.stable = float(timing.get("stable", 30))
        self.stopping = threading.Event()
        self.child: subprocess.Popen | None = None

    def stop(self, signum=None, frame=None) -> None:
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()

    def _pump(self, child: subprocess.Popen) -> None:
        out = child.stdout
        if out is None:
            return
        for chunk in iter(lambda: out.readline(65536), b""):
            self.log.write(chunk)

    def run(self) -> int:
        delay = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                child = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                )
            except OSError as exc:
                self.log.say(f"cannot start {self.name}: {exc.strerror or exc}; trying again in {delay:.0f} s")
                status = None
            else:
                self.child = child
                self._write_child_pid(child.pid)
                self.log.say(f"started {self.name} (pid {child.pid})")
                pump = threading.Thread(target=self._pump, args=(child,), daemon=True)
                pump.start()
                status = self._wait(child)
                pump.join(5)
                if self.stopping.is_set():
                    self.log.say(f"stopped {self.name}")
                    break
                if status == CONFIG_ERROR_STATUS:
                    self.log.say(
                        f"{self.name} exited with status 2 (a config error, see above): not started again; "
                        "fix the config, then run install.sh again"
                    )
                    return CONFIG_ERROR_STATUS
            if time.monotonic() - started >= self.stable:
                delay = 1.0
            self.log.say(f"{self.name} ended ({_describe(status)}); starting it again in {delay:.0f} s")
            if self.stopping.wait(delay):
                break
            delay = min(delay * 2, self.max_delay)
        self._write_child_pid(None)
        return 0

    def _wait(self, child: subprocess.Popen) -> int | None:
        while True:
            try:
                return child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                if self.stopping.is_set():
                    child.terminate()
                    try:
                        return child.wait(timeout=STOP_GRACE_SECONDS)
                    except subprocess.TimeoutExpired:
                        child.kill()
                        return child.wait()

    def _write_child_pid(self, pid: int | None) -> None:
        if not self.child_pidfile:
            return
        if pid is None:
            try:
                os.unlink(self.child_pidfile)
            except OSError:
                pass
            return
        temp = self.child_pidfile + ".new"
        with open(temp, "w", encoding="ascii") as fh:
            fh.write(f"{pid}\n")
        os.replace(temp, self.child_pidfile)


def _describe(status: int | None) -> str:
    if status is None:
        return "did not start"
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"


def supervise(args) -> int:
    argv = list(args.service)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("install.sh: supervise needs the service's command after --", file=sys.stderr)
        return 1
    try:
        log = RotatingLog(args.log, args.max_bytes, args.keep)
    except OSError as exc:
        print(f"install.sh: cannot open {args.log}: {exc.strerror}", file=sys.stderr)
        return 1
    supervisor = Supervisor(args.name, argv, log, args.child_pidfile, max_delay=args.max_delay, stable=args.stable)
    signal.signal(signal.SIGTERM, supervisor.stop)
    signal.signal(signal.SIGINT, supervisor.stop)
    return supervisor.run()
