"""The shape of what the agent's API answers, as docs/api.md states it."""

from __future__ import annotations

import re

#: A timestamp as the API writes it: UTC, to the second, with a Z.
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
#: The fields of a job.
JOB_KEYS = frozenset(
    {
        "id",
        "action",
        "stack",
        "site",
        "status",
        "created",
        "started",
        "finished",
        "exit_code",
        "message",
        "output",
        "result",
    }
)
