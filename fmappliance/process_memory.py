"""Keeping a long-running service's resident memory small (glibc malloc tuning).

Both services are mostly idle, GIL-bound and start up by importing and parsing far more than
they keep (YAML config, module source, zipapp bootstrap).  glibc keeps freed memory and
per-thread arenas mapped unless told otherwise; these two calls tell it.  Both are no-ops
off glibc (musl has neither).
"""

from __future__ import annotations

import gc
import os
import sys

_M_ARENA_MAX = -8  # from malloc.h


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (default up to 8 per core).

    With dozens of request threads the extra arenas hold several MB of freed memory; a
    GIL-bound process gains nothing from them.  MALLOC_ARENA_MAX, when set, wins.
    """
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc.mallopt(_M_ARENA_MAX, arenas)
    except AttributeError:
        pass


def release_freed_memory() -> None:
    """After start-up: collect garbage and hand free heap pages back to the kernel."""
    gc.collect()
    libc = _libc()
    try:
        if libc is not None:
            libc.malloc_trim(0)
    except AttributeError:
        pass
