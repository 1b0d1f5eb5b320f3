"""The one base of the agent's refusals: an :class:`AgentError` carries the HTTP status and the sentence.

Any route (or anything a route calls) may raise one; agent/app.py's error plugin renders it once as
``{"success": false, "message": ..., **details}`` with its status and headers, so routes need no
try/except of their own for refusals.
"""

from __future__ import annotations


class AgentError(Exception):
    """A request the agent refuses: ``status`` (4xx/5xx), ``message`` for the operator, optional extras."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None, **details):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        #: Extra fields of the JSON answer (PUT /schedules names the offending entry this way).
        self.details = details
