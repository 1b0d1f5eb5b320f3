"""Proof of restorability: restore a backup into a throwaway site of the same bench, check it, drop it.

A backup is only as good as its last successful restore.  The live site is never touched (no
safety backup, no maintenance mode): the backup goes into a fresh site ``restore-check-<random>.localhost``
created with ``mute_emails`` and ``pause_scheduler`` set before the restore (workers and the scheduler
serve every site of a bench, and a restored copy must send nothing and run no jobs).  The checks:
the restore command succeeded, the site's apps equal the manifest's, ``list-apps`` answers, and
``tabUser`` holds rows.  Whatever happens, the throwaway site is dropped into an archive dir of the
agent's own (``--archived-sites-path``), that dir is removed and the temporary database user dropped.  Each outcome is recorded per site (``ProofRecords``).
"""

from __future__ import annotations

import json
import logging
import secrets

from fmappliance.agent.backups import BackupError
from fmappliance.agent.dbaccess import DatabaseUnavailable, TemporaryDbUser
from fmappliance.agent.jobs import StepFailed
from fmappliance.agent.restore import SiteRestore, frappe_db_name
from fmappliance.agent.stacks.base import OpsFailed
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

THROWAWAY_PREFIX = "restore-check-"


def throwaway_name(in_use) -> str:
    """A fresh site name no site of the bench has."""
    while True:
        name = f"{THROWAWAY_PREFIX}{secrets.token_hex(4)}.localhost"
        if name not in in_use:
            return name


class TestRestore(SiteRestore):
    """One test_restore job: ``plan.site`` is the throwaway site, ``live_site`` the site whose backup is proven."""

    __test__ = False  # not a pytest class

    def __init__(self, ctx, plan, ops, store, *, live_site: str, source: str, timeout: float):
        super().__init__(ctx, plan, ops, store, take_backup=None, timeout=timeout)
        self.live_site = live_site
        self.source = source
        #: What _drop removed of the throwaway site, and why drop-site failed (said in the job's message).
        self.removed: list[str] = []
        self.drop_failure: str | None = None

    def bench(self, *args: str, label: str | None = None, check: bool = True):
        """Like SiteRestore.bench, but a failure names the command's last output line: the proof's reason."""
        result = self.run(self.ops.bench(*args), label=label, check=False)
        if check and not result.ok:
            lines = [line.strip() for line in (result.output or "").splitlines() if line.strip()]
            why = lines[-1][:300] if lines else (result.error or f"exit code {result.exit_code}")
            raise StepFailed(f"`{label or 'bench ' + ' '.join(args[:3])}` failed: {why}")
        return result

    def execute(self) -> dict:
        plan, ctx = self.plan, self.ctx
        ctx.log(
            f"== proving backup {plan.backup_id} of {self.live_site} ({self.source}) by restoring it into the "
            f"throwaway site {self.site}; {self.live_site} itself is not touched"
        )
        return super().execute()

    def _execute(self) -> dict:
        ctx = self.ctx
        db_name = frappe_db_name(self.site)  # the agent's own name for its throwaway site: nothing to trust
        try:
            db_user = TemporaryDbUser(self.ops, self.run, db_name, on_log=ctx.log)
            db_user.check_root()
            ctx.add_secret(db_user.root_password)
            ctx.add_secret(db_user.password)
        except (DatabaseUnavailable, OpsFailed) as exc:
            raise StepFailed(f"Restore test could not start (nothing was created): {exc}") from None
        created = False
        try:
            try:
                # A new-site that fails half-way can leave a site dir or database: drop whatever exists.
                created = True
                self._create_site(db_user, db_name)
                ctx.log("== muting emails and pausing the scheduler of the throwaway site before the restore")
                self.bench("--site", self.site, "set-config", "mute_emails", "1")
                self.bench("--site", self.site, "set-config", "pause_scheduler", "1")
                ctx.log("== checking the backup's parts against its manifest")
                staged, key = self._stage(self.plan.manifest, self.plan.from_stack, self.plan.from_site, ctx.job_id)
                ctx.log("== check 1: the restore succeeds")
                self._restore(staged, key, db_user, ctx.job_id, carry_key=True)
                self._prove()
            finally:
                if created:
                    self._drop(db_user)
        except (BackupError, DatabaseUnavailable, OpsFailed, StepFailed) as exc:
            raise StepFailed(f"{exc} {self._cleanup_note()}" if created else str(exc)) from None
        ctx.message = (
            f"Backup {self.plan.backup_id} of {self.live_site} ({self.source}) is proven restorable; "
            f"the throwaway site {self.site} was dropped and its files removed ({', '.join(self.removed) or 'none'})."
        )
        return {"backup": self.plan.backup_id, "source": self.source, "throwaway_site": self.site}

    def _cleanup_note(self) -> str:
        if self.drop_failure is not None:
            return f"The throwaway site {self.site} could not be dropped ({self.drop_failure})."
        if self.removed:
            return f"The throwaway site {self.site} was dropped and its files removed ({', '.join(self.removed)})."
        return f"The throwaway site {self.site} was dropped, but its files could not be removed; see the job's output."

    def _prove(self) -> None:
        ctx = self.ctx
        ctx.log("== check 2: the site's apps equal the backup's")
        result = self.bench("--site", self.site, "list-apps", "--format", "json", label="list-apps")
        apps = _apps_from(result.output, self.site)
        expected = self.plan.manifest.get("apps")
        if apps is None:
            raise StepFailed("the restored site did not list its apps (bench list-apps gave no JSON)")
        if isinstance(expected, list) and sorted(apps) != sorted(expected):
            raise StepFailed(
                f"the restored site has the apps {', '.join(apps) or 'none'}, "
                f"the backup recorded {', '.join(expected) or 'none'}"
            )
        ctx.log("apps: " + ", ".join(apps))
        ctx.log("== check 3: the database answers")
        self.bench("--site", self.site, "list-apps", label=f"bench --site {self.site} list-apps")
        result = self.bench(
            "--site", self.site, "execute", "frappe.db.count", "--args", '["User"]', label="count of tabUser rows"
        )
        count = _last_int(result.output)
        if count is None or count <= 0:
            raise StepFailed(f"the restored database holds no users (tabUser count: {count})")
        ctx.log(f"tabUser holds {count} rows")

    def _drop(self, db_user: TemporaryDbUser) -> None:
        """Drop the throwaway site into an archive dir of the agent's own and remove that dir: nothing of the
        site is left (bench's own archive would keep a full copy per test).  A failure is logged, never hidden."""
        ctx = self.ctx
        ctx.log(f"== dropping the throwaway site {self.site}")
        archive = self.ops.drop_archive_dir(ctx.job_id)
        result = None
        try:
            with db_user.granted(self.site):  # root login from the site config, which drop-site archives
                result = self.bench(
                    "drop-site",
                    self.site,
                    "--no-backup",
                    "--force",
                    "--archived-sites-path",
                    archive,
                    label=f"bench drop-site {self.site}",
                    check=False,
                )
        except (DatabaseUnavailable, OpsFailed) as exc:
            ctx.log(f"the throwaway site could not be dropped: {exc}")
            self.drop_failure = str(exc)[:300]
        if result is not None and not result.ok:
            lines = [line.strip() for line in (result.output or "").splitlines() if line.strip()]
            self.drop_failure = lines[-1][:300] if lines else (result.error or f"exit code {result.exit_code}")
        if result is None or not result.ok:
            ctx.log(f"WARNING: the throwaway site {self.site} could not be dropped; drop it by hand (bench drop-site)")
        self.removed = self.ops.remove_dropped_site(self.site, ctx.job_id, self.run)
        if self.removed:
            ctx.log(f"removed the throwaway site's files: {', '.join(self.removed)}")
        elif result is not None and result.ok:
            ctx.log(f"WARNING: {archive} (the dropped site's files) could not be removed; remove it by hand")


def _apps_from(output: str, site: str) -> list[str] | None:
    for line in reversed(output.splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        apps = doc.get(site) if isinstance(doc, dict) else None
        if isinstance(apps, list):
            return [str(a) for a in apps]
    return None


def _last_int(output: str) -> int | None:
    for line in reversed(output.splitlines()):
        try:
            return int(line.strip())
        except ValueError:
            continue
    return None


def outcome(*, backup: str, source: str, ok: bool, message: str) -> dict:
    return {"time": format_timestamp(), "backup": backup, "source": source, "ok": ok, "message": message}
