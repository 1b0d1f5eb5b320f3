"""Restore a site from a published backup, safely: preflight, safety backup, restore, migrate, check.

bench restore drops the site's database before it imports the dump, so a failed import leaves an
empty or half-filled site (frappe's ``_new_site`` drops and recreates it; docs/doubles.md, "Restores").  Hence the order:

1. Preflight, before anything changes: every part is re-hashed against its manifest while it is
   copied to a staging dir, the dump must hold ``__Auth``, the bench must have the backup's apps,
   there must be room for the safety backup, the database must answer, an encrypted backup must
   have its key.
2. A safety backup of the target (label ``pre-restore``), unless the site is being created.
3. Maintenance mode on, the scheduler paused.
4. The parts go where bench reads them; ``bench --site T --force restore`` runs as a temporary
   database user (dbaccess.py), never as root, its credentials and any key in the site config,
   never in an argv.
5. ``migrate``, maintenance off, the scheduler as it was, ``list-apps`` to see the site answers.

If 4 or 5 fails, the safety backup is restored the same way; if that fails too, maintenance stays
on so the site never serves half-restored data.  Stack specifics come from the stack's SiteOps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from fmappliance import wire
from fmappliance.agent.backups import (
    BackupError,
    BackupNotFound,
    DumpHasAuthTable,
    bench_names,
    copy_hashed,
    decrypting,
)
from fmappliance.agent.dbaccess import DatabaseUnavailable, TemporaryDbUser, check_db_name
from fmappliance.agent.jobs import StepFailed
from fmappliance.agent.runner import run_command
from fmappliance.agent.stacks.base import OpsFailed

log = logging.getLogger(__name__)


@dataclass
class RestorePlan:
    """What one restore_site request asks for, checked at request time."""

    stack_name: str
    stack: dict
    site: str
    backup_id: str
    from_stack: str
    from_site: str
    create_site: bool
    manifest: dict

    @property
    def same_site(self) -> bool:
        return (self.from_stack, self.from_site) == (self.stack_name, self.site)


def frappe_db_name(site: str) -> str:
    """The database name frappe gives a new site: '_' + the first 16 hex digits of sha1(site)."""
    return "_" + hashlib.sha1(site.encode()).hexdigest()[:16]


def _size(manifest: dict) -> int:
    return sum(f["size"] for f in manifest["files"])


class SiteRestore:
    """One restore job.  ``take_backup(ctx, site, label)`` publishes a verified backup and returns its manifest."""

    def __init__(self, ctx, plan: RestorePlan, ops, store, take_backup, *, timeout: float):
        self.ctx = ctx
        self.plan = plan
        self.ops = ops
        self.store = store
        self.take_backup = take_backup
        self.timeout = timeout
        self.site = plan.site
        self.staging_dirs: list[tuple[object | None, str]] = []

    # ------------------------------------------------------------------ running commands

    def run(
        self, cmd, *, quiet: bool = False, check: bool = True, label: str | None = None, secrets=(), raw: bool = False
    ):
        """Run a SiteOps Command.  Quiet commands (their output may hold a secret) stay out of the job output;
        ``raw`` (quiet only) leaves their output unmasked, for a file the agent reads back and rewrites."""
        if not quiet and cmd.input is None:
            return self.ctx.run(cmd.argv, timeout=self.timeout, cwd=cmd.cwd, env=cmd.env, check=check, label=label)
        result = run_command(
            cmd.argv,
            timeout=min(self.timeout, max(self.ctx.deadline_left(), 1)),
            cwd=cmd.cwd,
            env=cmd.env,
            redact=[] if raw else [*secrets, *self.ctx.secrets],
            parsed_only=raw,
            input=cmd.input,
        )
        if check and not result.ok:
            raise StepFailed(
                f"`{label or os.path.basename(cmd.argv[0])}` failed: "
                + (result.error or f"exit code {result.exit_code}")
            )
        return result

    def bench(self, *args: str, label: str | None = None, check: bool = True):
        return self.run(self.ops.bench(*args), label=label, check=check)

    # ------------------------------------------------------------------ the job

    def execute(self) -> dict:
        plan, ctx = self.plan, self.ctx
        source = f"{plan.from_site} on {plan.from_stack}"
        ctx.log(
            f"== restoring backup {plan.backup_id} of {source} onto {self.site} on {plan.stack_name}"
            + (" (a new site)" if plan.create_site else "")
        )
        try:
            return self._execute()
        finally:
            for stage, job_key in self.staging_dirs:
                try:
                    self.ops.cleanup(stage, self.site, job_key, self.run)
                except Exception:  # clean-up must not hide the job's real outcome
                    log.exception("could not remove the restore staging dir of job %s", job_key)

    def _execute(self) -> dict:
        plan, ctx = self.plan, self.ctx
        ctx.log("== step 1: preflight (nothing is changed until every check passed)")
        try:
            staged, key = self._stage(plan.manifest, plan.from_stack, plan.from_site, self.ctx.job_id)
            self._check_apps()
            config = {} if plan.create_site else self._site_config()
            db_name = self._db_name(config)
            if not plan.create_site:
                self._check_space()
            db_user = TemporaryDbUser(self.ops, self.run, db_name, on_log=ctx.log)
            db_user.check_root()
            ctx.add_secret(db_user.root_password)
            ctx.add_secret(db_user.password)
            ctx.log("the database answers")
        except (BackupError, DatabaseUnavailable, OpsFailed, StepFailed) as exc:
            raise StepFailed(f"Preflight failed, nothing was changed: {exc}") from None
        ctx.log("preflight passed")

        safety = None
        if plan.create_site:
            ctx.log("== step 2: no safety backup (the site is new)")
        else:
            ctx.log(f"== step 2: safety backup of {self.site}")
            safety = self.take_backup(ctx, self.site, wire.PRE_RESTORE)
            ctx.log(f"safety backup {safety['id']} verified and published")

        try:
            if plan.create_site:
                self._create_site(db_user, db_name)
                config = self._site_config()
            paused_before = bool(config.get("pause_scheduler"))
            ctx.log("== step 3: maintenance mode on, scheduler paused")
            self.bench("--site", self.site, "set-maintenance-mode", "on")
            self.bench("--site", self.site, "scheduler", "pause")
            try:
                ctx.log("== step 4: restore")
                self._restore(staged, key, db_user, self.ctx.job_id, carry_key=not plan.same_site)
                ctx.log("== step 5: migrate, maintenance off, scheduler as it was, check")
                self._finish(paused_before)
            except StepFailed as exc:
                if safety is None:
                    raise StepFailed(
                        f"Restore failed: {exc} The new site {self.site} holds a partial restore and stays in "
                        f"maintenance mode; drop it (bench drop-site) or restore again."
                    ) from None
                self._roll_back(safety, db_user, paused_before, str(exc))
        except DatabaseUnavailable as exc:
            raise StepFailed(f"Restore stopped before {self.site} was changed: {exc}") from None
        ctx.message = f"Backup {plan.backup_id} of {plan.from_site} restored onto {self.site} on {plan.stack_name}" + (
            f"; safety backup {safety['id']} was taken first." if safety else "."
        )
        return {
            "restored": plan.backup_id,
            "target": {"stack": plan.stack_name, "site": self.site},
            "safety_backup": safety["id"] if safety else None,
        }

    # ------------------------------------------------------------------ preflight

    def _stage(self, manifest: dict, stack: str, site: str, job_key: str) -> tuple[dict, str | None]:
        """Copy every part to the staging dir, re-hashing it against the manifest; part -> staged file name.

        Returns the staged names and, for an encrypted backup, its key (from the backup's own site config).
        """
        # fm: a staging dir inside the bench itself, used only through its directory fd (the container can
        # write around it; benchstage.py).  compose: None, the parts are verified where they are published and
        # copied into the container afterwards (a host copy first would double the I/O).
        stage = self.ops.open_stage(self.site, job_key)
        self.staging_dirs.append((stage, job_key))
        files = {f["part"]: f for f in manifest["files"]}
        key = None
        if manifest.get("encrypted"):
            key = self._backup_key(stack, site, files.get("site_config"))
        # bench's own naming (backups/bench_names.py): the published id's digits are bench's stamp
        stamp = manifest["id"].replace("-", "")

        def bench_name(part: str, entry: dict) -> str:
            encrypted = entry["name"].endswith(".gpg")
            plain = entry["name"].removesuffix(".gpg")
            ext = {"database": ".sql.gz", "site_config": ".json"}.get(
                part, ".tgz" if plain.endswith(".tgz") else ".tar"
            )
            return bench_names.file_name(stamp, site, part, ext, encrypted=encrypted)

        def part_name_and_path(part: str, entry: dict) -> tuple[str, str]:
            # compose: the path the parts are verified at (the local store, or an offsite copy's staging dir)
            return bench_name(part, entry), self.store.published_path(stack, site, entry["name"])

        def stage_part(part: str, entry: dict) -> tuple[str, str]:
            encrypted = entry["name"].endswith(".gpg")
            name = bench_name(part, entry)
            check = None
            if part == "database":
                check = DumpHasAuthTable()
                if encrypted:
                    if key is None:
                        raise BackupError("the database dump is encrypted but the manifest does not say so")
                    check = decrypting(check, key)
            try:
                src, st = self.store.open_published_file(stack, site, entry["name"])
            except BackupNotFound:
                raise BackupError(f"the backup file {entry['name']} is missing") from None
            with src:
                fd = stage.create(name) if stage is not None else os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                try:
                    size, digest = copy_hashed(src.fileno(), fd, st.st_size, check)
                finally:
                    os.close(fd)
            if size != entry["size"] or digest != entry["sha256"]:
                raise BackupError(
                    f"{entry['name']} does not match its manifest (sha256 or size differ): "
                    "the backup is damaged; pick another one"
                )
            if stage is not None:
                return name, os.path.join(stage.path, name)
            return part_name_and_path(part, entry)

        # The parts are hashed side by side: sha256 releases the GIL, and the re-hash is most of the preflight.
        # Copied by path (compose): the copy into the container's private staging dir runs meanwhile, from the
        # same published files (read once from disk); it touches nothing of the site, and a part that fails
        # its hash fails the preflight all the same (the staging dir is removed with the job's others).
        early = None
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="restore-stage") as pool:
            futures = {part: pool.submit(stage_part, part, entry) for part, entry in files.items()}
            if stage is None:
                by_path = dict(part_name_and_path(part, entry) for part, entry in files.items())
                early = pool.submit(self.ops.into_bench, by_path, self.site, job_key, self.run, None)
        results = {part: future.result() for part, future in futures.items()}
        where = early.result() if early is not None else None
        staged = {part: name for part, (name, _path) in results.items()}
        paths = {name: path for name, path in results.values()}
        self.ctx.log(
            f"every part matches its manifest ({len(staged)} files)"
            + ("; the dump holds __Auth" if "database" in staged else "")
        )
        if where is not None and paths != by_path:  # cannot differ (the same names and paths); never trust it
            where = None
        return {
            "paths": paths,
            "names": staged,
            "job_key": job_key,
            "stage": stage,
            "files": files,
            "where": where,
        }, key

    def _backup_key(self, stack: str, site: str, entry: dict | None) -> str:
        doc = self._published_site_config(stack, site, entry)
        key = doc.get("backup_encryption_key")
        if not isinstance(key, str) or not key:
            raise BackupError(
                "the backup is encrypted but its site config holds no backup_encryption_key; it cannot be decrypted"
            )
        self.ctx.add_secret(key)
        return key

    def _published_site_config(self, stack: str, site: str, entry: dict | None) -> dict:
        if entry is None:
            return {}
        try:
            handle, _st = self.store.open_published_file(stack, site, entry["name"])
        except BackupNotFound:
            raise BackupError(f"the backup file {entry['name']} is missing") from None
        with handle:
            try:
                doc = json.loads(handle.read(16 << 20))
            except ValueError:
                raise BackupError("the backup's site config is not valid JSON") from None
        return doc if isinstance(doc, dict) else {}

    def _check_apps(self) -> None:
        apps = self.plan.manifest.get("apps")
        if not isinstance(apps, list):
            self.ctx.log(
                "this backup does not record its apps (made before apps were recorded); going on without comparing them"
            )
            return
        try:
            text = self.ops.read_bench_file("sites/apps.txt", self.run)
        except (OpsFailed, StepFailed) as exc:
            raise BackupError(f"the bench's apps could not be listed: {exc}") from None
        installed = {line.strip() for line in text.splitlines() if line.strip()}
        missing = [a for a in apps if a not in installed]
        if missing:
            raise BackupError(
                f"the backup's site had {', '.join(missing)}, which the bench of {self.plan.stack_name} "
                "lacks; install it on the bench first (bench get-app) or restore elsewhere"
            )
        self.ctx.log("the bench has every app of the backup: " + ", ".join(apps))

    def _site_config(self) -> dict:
        try:
            text = self.ops.read_bench_file(f"sites/{self.site}/site_config.json", self.run)
            doc = json.loads(text)
        except (OpsFailed, StepFailed, ValueError) as exc:
            raise StepFailed(f"the site config of {self.site} could not be read: {exc}") from None
        if not isinstance(doc, dict):
            raise StepFailed(f"the site config of {self.site} is not a JSON object")
        return doc

    def _db_name(self, config: dict) -> str:
        """The database the temporary user may manage: frappe's name for a new site, else the site config's,
        checked (the container can write that file) against MariaDB's schemas and the bench's own record."""
        if self.plan.create_site:
            return check_db_name(frappe_db_name(self.site))
        return check_db_name(str(config.get("db_name") or ""), self.ops.expected_db_name(self.site))

    def _check_space(self) -> None:
        last = self.store.last_backup(self.plan.stack_name, self.site)
        needed = int(last["size"]) if last else _size(self.plan.manifest)
        usage = self.store.disk_usage()
        if usage["free_bytes"] < needed:
            raise BackupError(
                f"not enough free space in {usage['path']} for the safety backup of {self.site} "
                f"(about {needed >> 20} MiB needed, {usage['free_bytes'] >> 20} MiB free)"
            )

    # ------------------------------------------------------------------ changing the site

    def _create_site(self, db_user: TemporaryDbUser, db_name: str) -> None:
        admin = secrets.token_urlsafe(18)
        self.ctx.add_secret(admin)
        self.ctx.log(f"== creating the site {self.site}")
        # The site has no config yet: bench reads the root login and the Administrator password (frappe's
        # get_admin_password: conf `admin_password`) from common_site_config.json, for this step only.
        with db_user.granted(None, {"admin_password": admin}):
            self.bench(
                "new-site",
                self.site,
                "--db-name",
                db_name,
                "--mariadb-user-host-login-scope=%",
                label=f"bench new-site {self.site}",
            )

    def _restore(
        self, staged: dict, key: str | None, db_user: TemporaryDbUser, job_key: str, *, carry_key: bool
    ) -> None:
        where = staged.get("where") or self.ops.into_bench(
            staged["paths"], self.site, staged["job_key"], self.run, staged["stage"]
        )
        names = staged["names"]
        args = ["--site", self.site, "--force", "restore", f"{where}/{names['database']}"]
        for part, option in (("files", "--with-public-files"), ("private-files", "--with-private-files")):
            if part in names:
                args += [option, f"{where}/{names[part]}"]
        # An encrypted backup's key goes where bench restore looks without --encryption-key: the site config's
        # backup_encryption_key (the target's own value is put back afterwards).
        try:
            with db_user.granted(self.site, {"backup_encryption_key": key} if key else None):
                self.bench(*args, label=f"bench --site {self.site} --force restore")
        except DatabaseUnavailable as exc:  # the site is in maintenance mode by now: a failed step, rolled back
            raise StepFailed(str(exc)) from None
        if carry_key:
            self._carry_encryption_key(staged)

    def _carry_encryption_key(self, staged: dict) -> None:
        """A backup restored onto another site keeps its Password fields readable only with the source's key."""
        # From the published (agent-owned, hash-checked) copy, not the staged one the bench container can reach.
        try:
            doc = self._published_site_config(
                self.plan.from_stack, self.plan.from_site, staged["files"].get("site_config")
            )
        except BackupError:
            doc = {}
        key = doc.get("encryption_key") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not key:
            self.ctx.log("the backup's site config has no encryption_key; the target keeps its own")
            return
        self.ctx.add_secret(key)
        try:
            self.ops.update_site_config(self.site, {"encryption_key": key}, self.run)
        except OpsFailed as exc:
            raise StepFailed(f"the source site's encryption_key could not be written to {self.site}: {exc}") from None
        self.ctx.log(f"carried the source site's encryption_key over to {self.site} (Password fields stay readable)")

    def _finish(self, paused_before: bool) -> None:
        self.bench("--site", self.site, "migrate")
        self.bench("--site", self.site, "set-maintenance-mode", "off")
        self.bench("--site", self.site, "scheduler", "pause" if paused_before else "resume")
        self.bench(
            "--site", self.site, "list-apps", label=f"bench --site {self.site} list-apps (does the site answer?)"
        )

    def _roll_back(self, safety: dict, db_user: TemporaryDbUser, paused_before: bool, reason: str) -> None:
        ctx = self.ctx
        ctx.log(f"restore failed: {reason}")
        ctx.log(f"== rolling back to the safety backup {safety['id']}")
        try:
            staged, key = self._stage(safety, self.plan.stack_name, self.site, ctx.job_id + "-rollback")
            self._restore(staged, key, db_user, ctx.job_id + "-rollback", carry_key=False)
            self._finish(paused_before)
        except (StepFailed, BackupError, DatabaseUnavailable, OpsFailed) as exc:
            self.bench("--site", self.site, "set-maintenance-mode", "on", check=False)
            raise StepFailed(
                f"Restore failed: {reason} The roll-back to {safety['id']} failed too: {exc} "
                f"Maintenance mode stays on for {self.site} so it does not serve half-restored data; "
                f"restore the safety backup {safety['id']} again once the cause is fixed."
            ) from None
        ctx.log(f"rolled back to {safety['id']}")
        raise StepFailed(
            f"Restore failed: {reason} The site was rolled back to {safety['id']} and is out of maintenance mode."
        )
