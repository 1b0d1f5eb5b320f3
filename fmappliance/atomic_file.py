"""Files written so that a reader or a crash sees the old content or the new, never half of either.

Temp file in the same directory (created 0600 by mkstemp, then given its mode), written, fsynced, renamed
over the target, and the directory fsynced so that the rename itself survives a power cut.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def temp_prefix(path: str) -> str:
    """Temp files for ``dir/name.json`` are ``dir/.name-XXXXXXXX.tmp``: what a clean-up at start looks for."""
    return "." + os.path.basename(path).split(".")[0] + "-"


def write_atomically(path: str, data: bytes, mode: int = 0o600) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomically(path: str, doc: Any, mode: int = 0o600, **dump_options: Any) -> None:
    write_atomically(path, json.dumps(doc, **dump_options).encode("utf-8"), mode)
