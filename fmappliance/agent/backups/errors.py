"""The three ways a backup request fails.

BackupError is a job's failure (its text becomes the job's message); BackupNotFound and BadBackupRequest are
also refusals of a request (:class:`~fmappliance.agent.errors.AgentError`), so the agent's error plugin answers
them with their status when one reaches a route.
"""

from __future__ import annotations

from fmappliance.agent.errors import AgentError


class BackupError(Exception):
    """Operator message: why a backup could not be published (verification failure etc.)."""


class BackupNotFound(AgentError):
    """No such published backup file (or site backup directory): a 404.

    The API answers with one sentence for every way a file can be missing (no site directory, no manifest, a
    name not listed, a planted link); ``str()`` keeps the detail, for the callers that say more (publish).
    """

    #: The answer to a request for a file that is not served.
    ANSWER = "There is no such backup file."

    def __init__(self, detail: str):
        super().__init__(404, self.ANSWER)
        self.args = (detail,)


class BadBackupRequest(AgentError):
    """A malformed stack, site or file name (traversal, NUL, wrong shape): a 400 with that sentence."""

    def __init__(self, message: str = "That backup file cannot be served."):
        super().__init__(400, message)
