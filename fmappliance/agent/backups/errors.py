"""The three ways a backup request fails, each mapped to its own answer by the agent's API."""

from __future__ import annotations


class BackupError(Exception):
    """Operator message: why a backup could not be published (verification failure etc.)."""


class BackupNotFound(Exception):
    """No such published backup file (or site backup directory): a 404."""


class BadBackupRequest(Exception):
    """A malformed stack, site or file name (traversal, NUL, wrong shape): a 400."""
