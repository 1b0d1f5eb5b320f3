"""The dashboard's budget of relayed streams: backup downloads and followed logs share it.

Each relayed stream holds a waitress thread for its whole duration (docs/pitfalls.md), here and in
the agent: keep this many threads free for pages in the dashboard, and for status and actions
in the agent, whatever the number of downloads and log streams.  When the budget is spent the
next stream is refused with 503 and Retry-After, so pages keep answering.
"""

from __future__ import annotations

import threading

THREADS_KEPT_FOR_PAGES = 8
AGENT_THREADS_KEPT = 4


def relay_slot_count(config: dict) -> int:
    """How many streams may be relayed at once (both ends read the same config)."""
    return max(
        1, min(config["dashboard"]["threads"] - THREADS_KEPT_FOR_PAGES, config["agent"]["threads"] - AGENT_THREADS_KEPT)
    )


def relay_slots(config: dict) -> threading.BoundedSemaphore:
    """The one semaphore every relayed stream of this dashboard takes a slot from (non-blocking)."""
    return threading.BoundedSemaphore(relay_slot_count(config))
