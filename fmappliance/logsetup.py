"""Logging to stderr for journald, with secrets masked.

One logger per module (``logging.getLogger(__name__)``); this module only configures
the root handler once at start-up.  Under systemd (``JOURNAL_STREAM`` set) journald adds
its own timestamps, so ours are left out.
"""

from __future__ import annotations

import logging
import os
import sys


class SecretMaskingFilter(logging.Filter):
    """Replace every known secret in a record's final text by ``***``."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            text = record.getMessage()
            masked = text
            for secret in self.secrets:
                masked = masked.replace(secret, "***")
            if masked != text:
                record.msg, record.args = masked, None
        return True


def setup_logging(secrets=(), level: str | None = None) -> None:
    """Configure the root logger: stderr, one line per record, secrets masked."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(name)s: %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(SecretMaskingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level or os.environ.get("FMAPPLIANCE_LOG_LEVEL", "INFO"))
