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


#: Followed logs one user may hold at once (a person watches a few services, not all of them).
LOG_STREAMS_PER_USER = 3


class FollowedLogs:
    """Who holds the agent's followed-log slots (``agent.max_log_streams``), so nobody takes all.

    Each user may hold :data:`LOG_STREAMS_PER_USER`; viewers together leave one slot free for
    operators and admins, who may need a log while something is on fire (issue 21.8).
    """

    def __init__(self, limit: int, per_user: int = LOG_STREAMS_PER_USER):
        self.limit = limit
        self.per_user = max(1, min(per_user, limit))
        self._lock = threading.Lock()
        self._by_user: dict[str, int] = {}
        self._viewers = 0

    def take(self, user: str, privileged: bool) -> str | None:
        """Take a slot for ``user`` (``privileged``: an operator or admin): None, or why not."""
        with self._lock:
            if self._by_user.get(user, 0) >= self.per_user:
                return f"You already follow {self.per_user} logs, the most one user may; close one first."
            if not privileged and self.limit > 1 and self._viewers >= self.limit - 1:
                return "The last followed-log slot is kept for operators and admins; close a log or try again soon."
            self._by_user[user] = self._by_user.get(user, 0) + 1
            if not privileged:
                self._viewers += 1
        return None

    def give_back(self, user: str, privileged: bool) -> None:
        with self._lock:
            left = self._by_user.get(user, 0) - 1
            if left > 0:
                self._by_user[user] = left
            else:
                self._by_user.pop(user, None)
            if not privileged:
                self._viewers = max(0, self._viewers - 1)
