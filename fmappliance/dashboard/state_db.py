"""The dashboard's SQLite file (``<dashboard.state_dir>/dashboard.sqlite3``).

One connection shared by all request threads behind a lock: every statement here takes
microseconds, and a connection per thread (32 of them) would cost ~5 MB of RSS
(tests/benchmarks/bench_dashboard.py, goal < 45 MB).  WAL keeps other processes' readers
(e.g. a backup of the file) from blocking us.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

DB_FILE_NAME = "dashboard.sqlite3"


class StateDB:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, DB_FILE_NAME)
        self._lock = threading.RLock()
        # Second-factor secrets live here: the file and its WAL companions are the owner's only.
        old_umask = os.umask(0o077)
        try:
            self._conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=10000")
        finally:
            os.umask(old_umask)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.chmod(self.path + suffix, 0o600)
            except FileNotFoundError:
                pass

    def data_version(self) -> int:
        """Changes whenever another connection (another process) committed to the file."""
        with self._lock:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]

    @contextlib.contextmanager
    def transaction(self):
        """The connection, held exclusively; committed on success, rolled back on error."""
        with self._lock:
            with self._conn:
                yield self._conn
