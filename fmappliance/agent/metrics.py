"""``GET /metrics``: the agent's figures in the Prometheus text format, from what it already knows.

A scrape must stay cheap (Prometheus asks every 15 s), so nothing here starts a process:

- stack state comes from the status board, whose docker answers are cached;
- each site's backup facts are read from its manifests once and reused until the site's backup
  directory changes (a publish or a retention run renames or removes files in it, which moves
  the directory's mtime) or a job on that stack ends;
- job counters and duration histograms live in memory, seeded from the job store at start and
  moved on by every job that ends (so pruning old jobs never makes a counter go down);
- free space is one statvfs.

Per-site series are one table (``site_series``): a feature that learns something new per site
(offsite copies, restore tests) adds its gauge with one ``SiteGauge(...)`` line.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from fmappliance import wire
from fmappliance.actions_table import ACTIONS
from fmappliance.prometheus_text import Family, render
from fmappliance.wire import is_valid_site_name

log = logging.getLogger(__name__)

#: fmappliance_stack_up per status: 1 running, 0.5 partial, 0 stopped, -1 unknown.
STACK_UP = {"running": 1.0, "partial": 0.5, "stopped": 0.0, "unknown": -1.0}
#: Seconds: restarts take seconds to a minute, backups minutes, updates up to an hour or two.
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
JOB_OUTCOMES = wire.FINISHED


def _epoch(iso: str | None) -> float | None:
    """Seconds since the epoch of the agent's ISO-8601 UTC stamps ('2026-11-25T02:00:03Z')."""
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class SiteGauge:
    """One per-site gauge: ``value(stack, site)`` gives its figure, or None to leave the site out."""

    name: str
    help: str
    value: Callable[[str, str], float | None]


@dataclass(frozen=True)
class BackupFacts:
    last_success: float | None  # epoch seconds of the newest verified backup
    last_size: int | None
    kept: int


NO_BACKUPS = BackupFacts(None, None, 0)


class JobStats:
    """Counts and duration histograms of ended jobs per action, and the last backup time per site."""

    def __init__(self):
        self._lock = threading.Lock()
        self.totals = {(action, outcome): 0 for action in ACTIONS for outcome in JOB_OUTCOMES}
        self.buckets = {action: [0] * (len(JOB_DURATION_BUCKETS) + 1) for action in ACTIONS}
        self.sums = dict.fromkeys(ACTIONS, 0.0)
        self.backup_seconds: dict[tuple[str, str], float] = {}

    def observe(self, job: dict) -> None:
        action, status = job.get("action"), job.get("status")
        if action not in self.buckets or status not in JOB_OUTCOMES:
            return
        started, finished = _epoch(job.get("started")), _epoch(job.get("finished"))
        seconds = None if started is None or finished is None else max(finished - started, 0.0)
        with self._lock:
            self.totals[(action, status)] += 1
            if seconds is None:
                return  # failed before it started (e.g. the agent stopped): counted, not timed
            slot = next(
                (i for i, bound in enumerate(JOB_DURATION_BUCKETS) if seconds <= bound), len(JOB_DURATION_BUCKETS)
            )
            self.buckets[action][slot] += 1
            self.sums[action] += seconds
            if action == "backup_site" and status == wire.SUCCEEDED and job.get("site"):
                self.backup_seconds[(job["stack"], job["site"])] = seconds

    def families(self) -> list[Family]:
        totals = Family(
            "fmappliance_jobs_total", "counter", "Jobs that ended, by action and outcome (succeeded or failed)."
        )
        durations = Family(
            "fmappliance_job_duration_seconds",
            "histogram",
            "How long ended jobs ran, by action (from start to end, queueing not included).",
        )
        with self._lock:
            for (action, outcome), count in self.totals.items():
                totals.add(count, action=action, status=outcome)
            for action in ACTIONS:
                durations.add_histogram(
                    {"action": action}, JOB_DURATION_BUCKETS, self.buckets[action], self.sums[action]
                )
        return [totals, durations]


class AgentMetrics:
    """Renders the agent's ``/metrics`` text; ``job_ended`` is the job manager's end-of-job hook."""

    def __init__(self, *, status, store, jobs, proofs=None):
        self.status = status
        self.proofs = proofs
        self.store = store
        self.jobs = JobStats()
        #: The schedule runner (set by build_services): its lateness and missed series.
        self.schedules = None
        self._lock = threading.Lock()
        self._backup_cache: dict[tuple[str, str], tuple[tuple, BackupFacts]] = {}
        for job in jobs.finished_jobs():
            self.jobs.observe(job)
        self.site_series = [
            SiteGauge(
                "fmappliance_backup_last_success_timestamp_seconds",
                "When the newest verified backup of the site was taken (0: the site has none).",
                lambda stack, site: self.backup_facts(stack, site).last_success or 0.0,
            ),
            SiteGauge(
                "fmappliance_backup_last_size_bytes",
                "Total size of the newest verified backup of the site.",
                lambda stack, site: self.backup_facts(stack, site).last_size,
            ),
            SiteGauge(
                "fmappliance_backups_kept",
                "Published backups of the site on disk.",
                lambda stack, site: self.backup_facts(stack, site).kept,
            ),
            SiteGauge(
                "fmappliance_backup_duration_seconds",
                "How long the last successful backup_site job of the site ran.",
                lambda stack, site: self.jobs.backup_seconds.get((stack, site)),
            ),
            SiteGauge(
                "fmappliance_restore_test_last_success_timestamp_seconds",
                "When a test restore last proved the site's backup restorable (0: never).",
                lambda stack, site: (_epoch(self.proofs.last_success(stack, site)) or 0.0) if self.proofs else None,
            ),
        ]

    # ------------------------------------------------------------------ hooks

    def job_ended(self, job: dict) -> None:
        self.jobs.observe(job)
        with self._lock:  # a backup or an update changes the stack's backups: read them afresh
            for key in [k for k in self._backup_cache if k[0] == job.get("stack")]:
                del self._backup_cache[key]

    # ------------------------------------------------------------------ facts

    def backup_facts(self, stack: str, site: str) -> BackupFacts:
        """The site's backup facts, re-read only when its backup directory changed."""
        path = os.path.join(self.store.base_path, stack, site)
        try:
            st = os.stat(path)
        except OSError:
            return NO_BACKUPS
        stamp = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            cached = self._backup_cache.get((stack, site))
        if cached is not None and cached[0] == stamp:
            return cached[1]
        backups = self.store.list_backups(stack, site)
        kept = len(backups)
        newest = next((b for b in backups if b.get("verified") is True), None)
        facts = BackupFacts(_epoch(newest["created"]) if newest else None, newest["size"] if newest else None, kept)
        with self._lock:
            self._backup_cache[(stack, site)] = (stamp, facts)
        return facts

    def _sites(self, stack: dict) -> list[str]:
        """The sites the status knows, plus any with a backup directory (a stack that is down still has backups)."""
        sites = set(stack.get("sites") or ())
        try:
            with os.scandir(os.path.join(self.store.base_path, stack["name"])) as entries:
                sites.update(e.name for e in entries if is_valid_site_name(e.name) and e.is_dir(follow_symlinks=False))
        except OSError:
            pass
        return sorted(sites)

    # ------------------------------------------------------------------ rendering

    def families(self) -> list[Family]:
        up = Family("fmappliance_stack_up", "gauge", "Stack state: 1 running, 0.5 partial, 0 stopped, -1 unknown.")
        per_site = [Family(g.name, "gauge", g.help) for g in self.site_series]
        for stack in self.status.all():
            up.add(STACK_UP.get(stack.get("status"), -1.0), stack=stack["name"])
            for site in self._sites(stack):
                for gauge, family in zip(self.site_series, per_site):
                    value = gauge.value(stack["name"], site)
                    if value is not None:
                        family.add(value, stack=stack["name"], site=site)
        disk = Family(
            "fmappliance_backup_disk_free_bytes", "gauge", "Free space on the file system holding the backups."
        )
        try:
            usage = self.store.disk_usage()
            disk.add(usage["free_bytes"], path=usage["path"])
        except OSError as exc:
            log.warning("cannot read disk usage of the backup dir: %s", exc)
        schedules = self.schedules.families() if self.schedules is not None else []
        return [up, *per_site, *self.jobs.families(), disk, *schedules]

    def render(self) -> str:
        return render(self.families())
