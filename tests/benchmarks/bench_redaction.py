"""Redaction throughput: every line of job output passes through it before anyone sees it.

Goal: at least 50 MB/s on job-like output (a migrate/backup log with a few secret-looking
lines).  The adversarial inputs (long lines without secrets, pathological repetition of secret
words, which made the earlier backtracking patterns take seconds per kilobyte) are shown for
information: what matters there is that the time grows linearly with the input.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from measure import verdict  # noqa: E402

from fmappliance.agent.runner import redact_text  # noqa: E402

GOAL_MB_S = 50.0

# One line in ten holds a trigger word, one in twenty a secret: generous for a migrate or backup log.
JOB_LINES = [
    "Migrating site1.example.com",
    "Updating DocTypes for frappe        : [========================================] 100%",
    "Updating DocTypes for erpnext       : [=====================                   ]  52%",
    "Executing frappe.patches.v15_0.remove_background_jobs_from_dropdown in site1.example.com (_5e2c1d0a9b8f7e6d)",
    "Executing erpnext.patches.v15_0.rename_daily_depreciation_to_depreciation_amount_based_on_shift in site1.example.com",
    "Queued rebuilding of search index for site1.example.com",
    "Backing up site1.example.com: database 12.4 MiB, public files 3.1 MiB, private files 0.8 MiB",
    "Compiling assets for erpnext... done in 14.2 s",
    '2026-11-30T05:00:00.123456789Z backend-1 | 172.18.0.5 - - [30/Nov/2026 05:00:00] "GET /api/method/ping HTTP/1.1" 200 -',
    "Syncing fixtures for erpnext",
    "Set up the key pair for the new workers (keyboard-interactive disabled)",
    "Syncing jobs for frappe",
    "Syncing customizations for erpnext",
    "Building search index for site1.example.com",
    "Config  : ./sites/site1.example.com/site_config.json  1.1KiB",
    "Database: ./sites/site1.example.com/private/backups/20261130_050000-site1-database.sql.gz  12.4MiB",
    "Queued jobs: 0, workers: 2",
    "Clearing cache for site1.example.com",
    "Removing orphaned DocTypes",
    "DB Root Password: hunter2-very-secret",
]


def throughput(text: str, split_lines: bool, repeat: int = 3) -> float:
    """MB/s, best of ``repeat`` (CPU time, so other load on the machine counts less)."""
    best = float("inf")
    lines = text.split("\n") if split_lines else [text]
    for _ in range(repeat):
        start = time.process_time()
        for line in lines:
            redact_text(line)
        best = min(best, time.process_time() - start)
    return len(text.encode()) / best / 1e6


def main() -> int:
    job = "\n".join(JOB_LINES[i % len(JOB_LINES)] for i in range(200_000))  # ~16 MB
    by_line = throughput(job, split_lines=True)
    whole = throughput(job, split_lines=False)
    print(
        f"job-like output, line by line as the runner feeds it: {by_line:.0f} MB/s (goal >= {GOAL_MB_S:.0f} MB/s) "
        f"{verdict(by_line >= GOAL_MB_S)}"
    )
    print(f"job-like output, one {len(job) / 1e6:.0f} MB text: {whole:.0f} MB/s (information)")
    for name, unit in (
        ("long line, no secret", "a"),
        ("secret word repeated", "password"),
        ("key: value repeated", 'password: "'),
        ("flag repeated", "--password"),
        ("table cells repeated", "password │"),
        ("URL anchors repeated", "://a:"),
    ):
        rates = [throughput(unit * (size // len(unit)), split_lines=False) for size in (8_192, 65_536)]
        print(
            f"adversarial {name!r}: 8 KB {rates[0]:.1f} MB/s, 64 KB {rates[1]:.1f} MB/s "
            f"(information: similar figures mean linear time)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
