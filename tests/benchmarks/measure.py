"""Small measuring aids shared by the benchmark scripts."""

from __future__ import annotations


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS (gone?)")


def verdict(ok: bool) -> str:
    """The word tests/benchmarks/run.py collects for the summary."""
    return "PASS" if ok else "MISS"
