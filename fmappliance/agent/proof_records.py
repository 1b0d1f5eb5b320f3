"""The last test restore of every site (``restore_tests.json``): read by the metrics and pages at
every start, apart from restore_proof.py so that an agent at rest does not load the restore code."""

from __future__ import annotations

import json
import os
import threading

from fmappliance.atomic_file import write_json_atomically


class ProofRecords:
    """The last test restore of every site, in ``<state_dir>/restore_tests.json`` (survives restarts)."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, "restore_tests.json")
        self._lock = threading.Lock()

    def _load(self) -> dict:
        try:
            with open(self.path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def last(self, stack: str, site: str) -> dict | None:
        """The site's last test restore, or None (never tested)."""
        entry = self._load().get("last", {}).get(stack, {}).get(site)
        return entry if isinstance(entry, dict) else None

    def last_success(self, stack: str, site: str) -> str | None:
        """When the site was last proven restorable (kept when a later test fails)."""
        value = self._load().get("last_success", {}).get(stack, {}).get(site)
        return value if isinstance(value, str) else None

    def record(self, stack: str, site: str, result: dict) -> None:
        with self._lock:
            doc = self._load()
            doc.setdefault("last", {}).setdefault(stack, {})[site] = result
            if result.get("ok"):
                doc.setdefault("last_success", {}).setdefault(stack, {})[site] = result["time"]
            write_json_atomically(self.path, doc, 0o600, indent=1)
