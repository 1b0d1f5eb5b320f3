"""The dashboard's SQLite file (``<dashboard.state_dir>/dashboard.sqlite3``).

One connection per thread (waitress runs many), WAL so readers never wait for the
writer, and a busy timeout instead of "database is locked" errors.
"""

from __future__ import annotations

import os
import sqlite3
import threading

DB_FILE_NAME = "dashboard.sqlite3"


class StateDB:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, DB_FILE_NAME)
        self._local = threading.local()
        with self.connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (autocommit off; use ``with conn:`` for a transaction)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            # Tiny tables; a small page cache per thread keeps 32 threads' RSS low.
            conn.execute("PRAGMA cache_size=-256")
            self._local.conn = conn
        return conn
