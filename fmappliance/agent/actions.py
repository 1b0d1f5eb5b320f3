"""The allow-list: each action name becomes a background job made of argv steps.

There is no generic exec: only the actions below exist, every argv is built by the module of
the stack's type (stacks/) from names the inventory vouched for, and each action has its own overall time limit
(``agent.action_timeouts``).  The stack's status cache is dropped when a job starts and
when it ends.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from fmappliance.agent import stacks
from fmappliance.agent.inventory import Inventory, NameRejected, SitesUnavailable
from fmappliance.agent.jobs import JobContext, JobManager, StepFailed
from fmappliance.agent.runner import resolve_binary
from fmappliance.names import SITE_ACTIONS

log = logging.getLogger(__name__)

_STARTED = {
    "restart_stack": "Restart of stack {stack} started.",
    "update_stack": "Update of stack {stack} started; every site is backed up first.",
    "restart_site": "Restart of {site} on {stack} started.",
    "migrate_site": "Migration of {site} on {stack} started.",
    "backup_site": "Backup of {site} on {stack} started.",
    "start_stack": "Start of stack {stack} started.",
    "stop_stack": "Stop of stack {stack} started.",
    "restore_site": "Restore of backup {backup} onto {site} on {stack} started.",
    "import_backup": "Import of {name} as a backup of {site} on {stack} started.",
    "test_restore": "Restore test of backup {backup} of {site} on {stack} started (in a throwaway site).",
    "offsite_copy": "Offsite copy of {site} on {stack} started.",
    "offsite_check": "Check of the offsite repository started.",
}


class ActionRejected(Exception):
    """A request for an action that may not run; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def clean_staging(state_dir: str) -> None:
    """Remove backup copies left in the staging dir by an agent that died mid-backup."""
    staging = os.path.join(state_dir, "staging")
    if os.path.isdir(staging):
        for entry in os.listdir(staging):
            shutil.rmtree(os.path.join(staging, entry), ignore_errors=True)


class Actions:
    """Turns an allowed action request into a queued job."""

    def __init__(self, config: dict, inventory: Inventory, jobs: JobManager, store, status=None, offsite=None):
        self.config = config
        self.inventory = inventory
        self.jobs = jobs
        self.store = store
        self.status = status
        self.allowed = set(config["security"]["allowed_actions"])
        self.timeouts = config["agent"]["action_timeouts"]
        self.state_dir = config["agent"]["state_dir"]
        self.offsite = offsite
        from fmappliance.agent.restore_proof import ProofRecords

        self.proofs = ProofRecords(self.state_dir)

    # ------------------------------------------------------------------ requests

    def start(
        self, action: str, stack_name, site=None, options: dict | None = None, *, own_work: bool = False
    ) -> tuple[dict, bool, str]:
        """Check and queue an action; returns (job, created, message) or raises ActionRejected.

        ``options`` holds the action's extra fields (already type-checked by the API): backup_site's
        label, restore_site's backup/from_stack/from_site/create_site, import_backup's name.
        ``own_work``: the agent queues this itself (an offsite copy after a backup, the hourly
        catch-up); the allow-list governs requests only.
        """
        options = dict(options or {})
        if action not in self.allowed and not own_work:
            raise ActionRejected(403, f"The action {action} is not allowed on this server (security.allowed_actions).")
        if action in ("offsite_copy", "offsite_check") and (self.offsite is None or not self.offsite.enabled):
            raise ActionRejected(409, "Offsite copies are not configured on this server (no offsite.repository).")
        if action == "offsite_check":
            return self._submit(action, "", None, {"name": ""}, options)
        try:
            stack = self.inventory.check_stack(stack_name)
            if action == "restore_site":
                plan = self._restore_plan(stack_name, stack, site, options)
                site = plan.site
                options["plan"] = plan
            elif action == "test_restore":
                site = self.inventory.check_site(stack_name, site)
                options["plan"] = self._proof_plan(stack_name, stack, site, options)
                options["backup"] = options["plan"].backup_id
            elif action == "import_backup":
                site = self.inventory.check_site(stack_name, site)
                options["import_set"] = self._import_set(options.get("name"))
            elif action in SITE_ACTIONS:
                site = self.inventory.check_site(stack_name, site)
        except NameRejected as exc:
            raise ActionRejected(exc.status, exc.message) from None
        except SitesUnavailable as exc:
            raise ActionRejected(409, f"The sites of stack {stack_name} cannot be checked right now: {exc}") from None
        return self._submit(action, stack_name, site, stack, options)

    def _submit(self, action: str, stack_name: str, site, stack: dict, options: dict) -> tuple[dict, bool, str]:
        body = self._body(action, stack_name, stack, site, options)
        message = _STARTED[action].format(
            stack=stack_name, site=site, backup=options.get("backup"), name=options.get("name")
        )
        job, created = self.jobs.submit(
            action=action,
            stack=stack_name,
            site=site if action in SITE_ACTIONS else None,
            body=body,
            message=message,
            on_start=self._invalidate,
            timeout=self.timeouts[action],
        )
        if not created:
            message = f"The same action is already {job['status']}; showing that job."
        return job, created, message

    def _restore_plan(self, stack_name: str, stack: dict, site, options: dict):
        from fmappliance.agent.restore import RestorePlan
        from fmappliance.names import SITE_NAME_RULE, is_valid_site_name

        create = options.get("create_site") is True
        if create:
            refusal = stacks.for_stack(stack).new_site_refusal()
            if refusal:
                raise ActionRejected(400, refusal)
            if not is_valid_site_name(site):
                raise ActionRejected(400, f"That is not a valid site name (expected {SITE_NAME_RULE}).")
            if site in self.inventory.sites(stack_name, refresh=True):
                raise ActionRejected(
                    409, f"{site} already exists on {stack_name}; restore onto it without create_site."
                )
        else:
            site = self.inventory.check_site(stack_name, site)
        from_stack = options.get("from_stack") or stack_name
        from_site = options.get("from_site") or site
        self.inventory.check_stack(from_stack)
        if not is_valid_site_name(from_site):
            raise ActionRejected(400, f"from_site is not a valid site name (expected {SITE_NAME_RULE}).")
        if options.get("source") == "offsite":
            manifest = self._offsite_manifest(from_stack, from_site, options.get("backup"))
        else:
            manifest = self.store.get_manifest(from_stack, from_site, options.get("backup"))
        if manifest is None:
            raise ActionRejected(404, f"There is no backup {options.get('backup')} of {from_site} on {from_stack}.")
        return RestorePlan(stack_name, stack, site, manifest["id"], from_stack, from_site, create, manifest)

    def _proof_plan(self, stack_name: str, stack: dict, site: str, options: dict):
        """The plan of a test restore: the backup (given, or the newest verified one) into a fresh throwaway site."""
        from fmappliance.agent.restore import RestorePlan
        from fmappliance.agent.restore_proof import throwaway_name

        source = options.get("source") or "local"
        if source not in ("local", "offsite"):
            raise ActionRejected(400, "source must be 'local' or 'offsite'.")
        if source == "offsite" and (self.offsite is None or not self.offsite.enabled):
            raise ActionRejected(
                409,
                "Offsite copies are not configured on this agent, so only local backups can be tested; "
                "send source 'local' (or leave it out).",
            )
        backup_id = options.get("backup")
        if source == "offsite":
            if backup_id is None:
                raise ActionRejected(400, "Name the offsite backup to test (the backup field).")
            manifest = self._offsite_manifest(stack_name, site, backup_id)
        elif backup_id is None:
            verified = [b for b in self.store.list_backups(stack_name, site) if b.get("verified")]
            if not verified:
                raise ActionRejected(
                    404, f"{site} on {stack_name} has no verified backup to test yet; back it up first."
                )
            backup_id = verified[0]["id"]
        if source == "local":
            manifest = self.store.get_manifest(stack_name, site, backup_id)
        if manifest is None:
            raise ActionRejected(404, f"There is no backup {backup_id} of {site} on {stack_name}.")
        throwaway = throwaway_name(set(self.inventory.sites(stack_name, refresh=True)))
        return RestorePlan(stack_name, stack, throwaway, manifest["id"], stack_name, site, True, manifest)

    def _offsite_manifest(self, stack: str, site: str, backup) -> dict | None:
        from fmappliance.agent.offsite import OffsiteFailed

        if self.offsite is None or not self.offsite.enabled:
            raise ActionRejected(409, "Offsite copies are not configured on this server (no offsite.repository).")
        try:
            manifest = self.offsite.manifest_of(stack, site, backup)
        except OffsiteFailed as exc:
            raise ActionRejected(502, str(exc)) from None
        if manifest is None:
            raise ActionRejected(404, f"There is no offsite copy of backup {backup} of {site} on {stack}.")
        return manifest

    def _import_set(self, name):
        from fmappliance.agent.imports import ImportNotFound, find_import_set

        try:
            return find_import_set(self.config["backups"]["base_path"], name)
        except ImportNotFound as exc:
            raise ActionRejected(404, str(exc)) from None

    def _invalidate(self, job: dict) -> None:
        if self.status is not None:
            self.status.invalidate(job["stack"])

    # ------------------------------------------------------------------ job bodies

    def _body(self, action: str, name: str, stack: dict, site: str | None, options: dict):
        timeout = self.timeouts[action]

        def body(ctx: JobContext):
            if action == "backup_site":
                assert site is not None  # start() checked it against the inventory
                manifest = self._backup(ctx, name, stack, site, timeout, label=options.get("label") or "manual")
                return {"backup": manifest}
            if action == "update_stack":
                return self._update(ctx, name, stack, timeout)
            if action == "restore_site":
                return self._restore(
                    ctx, name, stack, options["plan"], timeout, offsite=options.get("source") == "offsite"
                )
            if action == "test_restore":
                assert site is not None  # start() checked it against the inventory
                return self._test_restore(
                    ctx, name, stack, site, options["plan"], timeout, offsite=options.get("source") == "offsite"
                )
            if action == "import_backup":
                assert site is not None  # start() checked it against the inventory
                return self._import(ctx, name, site, options["import_set"])
            if action == "offsite_copy":
                return self.offsite.copy_site(ctx, name, site)
            if action == "offsite_check":
                return self.offsite.check(ctx)
            stacks.for_stack(stack).run_action(ctx, self._binary, action, site, timeout)
            return None

        return body

    def queue_offsite_copy(self, stack_name: str, site: str) -> None:
        """Queue a copy of a site's new backups; it runs after the current job and can never fail it.

        The copy is the agent's own work, not a request: security.allowed_actions (which governs API
        requests) does not apply, so a list without offsite_copy never silently stops the copies.
        """
        if self.offsite is None or not self.offsite.enabled:
            return
        try:
            self.start("offsite_copy", stack_name, site, own_work=True)
        except Exception:  # the backup is published; the hourly catch-up copies it
            log.exception("could not queue the offsite copy of %s on %s", site, stack_name)

    def _site_ops(self, stack: dict) -> stacks.SiteOps:
        try:
            return stacks.for_stack(stack).site_ops(self._find, self.state_dir)
        except stacks.StackUnsupported as exc:
            raise StepFailed(str(exc)) from None

    def _restore(self, ctx, name: str, stack: dict, plan, timeout: float, *, offsite: bool = False) -> dict:
        from fmappliance.agent.restore import SiteRestore

        def take_backup(job_ctx, site, label):
            return self._backup(job_ctx, name, stack, site, timeout, label=label)

        source = self.store
        staging = os.path.join(self.state_dir, "offsite-restore", ctx.job_id)
        try:
            if offsite:
                source = self.offsite.stage_for_restore(ctx, plan.from_stack, plan.from_site, plan.manifest, staging)
            return SiteRestore(ctx, plan, self._site_ops(stack), source, take_backup, timeout=timeout).execute()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self.inventory.invalidate(name)

    def _test_restore(
        self, ctx, name: str, stack: dict, site: str, plan, timeout: float, *, offsite: bool = False
    ) -> dict:
        """Prove a backup restorable; the outcome is recorded for the site whatever happens."""
        from fmappliance.agent.restore_proof import TestRestore, outcome

        source = "offsite" if offsite else "local"
        staging = os.path.join(self.state_dir, "offsite-restore", ctx.job_id)
        try:
            store = self.store
            if offsite:
                # the same checked staging as a restore from offsite: every file matches its manifest's sha256
                store = self.offsite.stage_for_restore(ctx, plan.from_stack, plan.from_site, plan.manifest, staging)
            result = TestRestore(
                ctx, plan, self._site_ops(stack), store, live_site=site, source=source, timeout=timeout
            ).execute()
        except StepFailed as exc:
            reason = f"Restore test of backup {plan.backup_id} failed: {exc}"
            self.proofs.record(name, site, outcome(backup=plan.backup_id, source=source, ok=False, message=reason))
            raise StepFailed(reason) from None
        except BaseException:
            self.proofs.record(
                name,
                site,
                outcome(
                    backup=plan.backup_id, source=source, ok=False, message="Restore test stopped by an internal error."
                ),
            )
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            self.inventory.invalidate(name)
        self.proofs.record(
            name,
            site,
            outcome(
                backup=plan.backup_id,
                source=source,
                ok=True,
                message=f"proven restorable from backup {plan.backup_id} ({source})",
            ),
        )
        return result

    def _import(self, ctx, name: str, site: str, import_set) -> dict:
        from fmappliance.agent.imports import publish_import

        return {"backup": publish_import(ctx, self.store, name, site, import_set)}

    def _find(self, key: str) -> str | None:
        return resolve_binary(self.config["agent"][key])

    def _binary(self, key: str) -> str:
        name = self.config["agent"][key]
        path = resolve_binary(name)
        if path is None:
            raise StepFailed(f"`{name}` was not found (agent.{key}); install it or set its full path in the config.")
        return path

    def _update(self, ctx, name, stack, timeout):
        """Record what runs, back up every site, update, check health; on failure roll back (the stack's driver
        records what runs and rolls back what is not a database)."""
        try:
            sites = self.inventory.sites(name, refresh=True)
        except SitesUnavailable as exc:
            raise StepFailed(f"Update stopped before it began: {exc}") from None
        driver = stacks.for_stack(stack)
        driver.preflight(self._binary)
        ctx.log("== recording what runs now")
        try:
            running = driver.record_running(ctx, self._binary, timeout)
        except StepFailed as exc:
            raise StepFailed(f"Update stopped before changing anything: {exc}") from None
        backups: dict[str, dict] = {}
        for site in sites:
            ctx.log(f"== backing up {site} before the update")
            try:
                backups[site] = self._backup(ctx, name, stack, site, timeout, label="pre-update")
            except StepFailed as exc:
                raise StepFailed(
                    f"Update stopped before changing anything: the backup of {site} failed: {exc}"
                ) from None
        try:
            driver.update(ctx, self._binary, sites, timeout)
            ctx.log("== health check")
            driver.health_check(ctx, self._binary, timeout)
            ops = self._site_ops(stack)
            for site in sites:
                cmd = ops.bench("--site", site, "list-apps")
                ctx.run(cmd.argv, timeout=timeout, cwd=cmd.cwd, env=cmd.env, label=f"health check: {site} list-apps")
        except StepFailed as exc:
            self._roll_back_update(ctx, name, stack, exc, running, backups, timeout)
        ctx.message = (
            f"Stack {name} updated; backups taken first: "
            + (", ".join(f"{s} ({m['id']})" for s, m in backups.items()) or "none (no sites)")
            + "."
        )
        uncommitted = sorted(app for app, commit in running.commits.items() if commit.startswith("version "))
        if uncommitted:
            ctx.message += f" No commit to name for {', '.join(uncommitted)} (not a git checkout); recorded by version."
        return {"backups": {s: m["id"] for s, m in backups.items()}}

    def _roll_back_update(self, ctx, name, stack, failure, running: stacks.RunningState, backups, timeout) -> None:
        """Undo a failed update: what the driver rolls back first (compose: the old images), then every
        site's database."""
        from fmappliance.agent.restore import RestorePlan, SiteRestore

        ctx.log(f"update failed: {failure}")
        done, failed = stacks.for_stack(stack).roll_back(ctx, self._binary, name, running, self.state_dir, timeout)
        for site, manifest in backups.items():
            ctx.log(f"== rolling back {site} to its pre-update backup {manifest['id']}")
            plan = RestorePlan(name, stack, site, manifest["id"], name, site, False, manifest)

            def take_backup(job_ctx, target, label):
                return self._backup(job_ctx, name, stack, target, timeout, label=label)

            try:
                SiteRestore(ctx, plan, self._site_ops(stack), self.store, take_backup, timeout=timeout).execute()
                done.append(f"{site} restored from {manifest['id']}")
            except StepFailed as exc:
                failed.append(f"{site} could not be restored from {manifest['id']}: {exc}")
        self.inventory.invalidate(name)
        text = f"Update of {name} failed: {failure} Rolled back: " + ("; ".join(done) or "nothing") + "."
        if failed:
            text += " NOT rolled back: " + "; ".join(failed) + "."
        if running.commits:
            text += (
                " Application code was not rolled back (fm benches update their apps in place); to return to "
                "the code that ran before, check out these commits: "
                + ", ".join(f"{app} {commit}" for app, commit in sorted(running.commits.items()))
                + "."
            )
        raise StepFailed(text)

    # ------------------------------------------------------------------ backup

    def _check_room(self, needed: int, staging: str) -> None:
        """Refuse a copy out of a container that would not fit in staging and then in base_path."""
        from fmappliance.agent.backups import BackupError

        try:
            self.store.check_room_for_copy(needed, staging)
        except BackupError as exc:
            raise StepFailed(f"The backup was not copied: {exc}.") from None

    def _backup(self, ctx, name: str, stack: dict, site: str, timeout: float, *, label: str = "manual") -> dict:
        """Run `bench backup --with-files`, collect its files, publish them verified (with the site's apps
        and ``label`` in the manifest), apply retention."""
        from fmappliance.agent.backups import BackupError

        started = time.time()
        staging = os.path.join(self.state_dir, "staging", ctx.job_id + "-" + site)
        try:
            driver = stacks.for_stack(stack)
            sources = driver.collect_backup_files(ctx, self._binary, site, timeout, started, staging, self._check_room)
            apps = self._site_apps(ctx, stack, site, timeout)
            ctx.log(f"== verifying and publishing {', '.join(sorted(sources))}")
            try:
                # Nothing below the source root is followed as a link; publish also refuses
                # anything but regular files, and checks their sizes against the free space.
                manifest = self.store.publish(
                    name, site, sources, source_root=driver.source_root(staging), label=label, apps=apps
                )
            except BackupError as exc:
                raise StepFailed(f"The backup of {site} failed verification and was not published: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if label == "pre-restore":
            # A safety backup must not push out the backup being restored (or any other) mid-restore;
            # retention counts it on the next regular backup.
            ctx.message = f"Backup {manifest['id']} of {site} on {name} verified and published."
            self.queue_offsite_copy(name, site)
            return manifest
        self.queue_offsite_copy(name, site)
        try:
            removed = self.store.apply_retention(name, site)
            if removed:
                ctx.log("retention removed: " + ", ".join(removed))
        except Exception:  # a retention problem must not turn a good backup into a failure
            log.exception("retention for %s/%s failed", name, site)
            ctx.log("retention could not run; see the agent log")
        ctx.message = f"Backup {manifest['id']} of {site} on {name} verified and published."
        return manifest

    def _site_apps(self, ctx, stack: dict, site: str, timeout: float) -> list[str] | None:
        """The site's apps as `bench --site S list-apps --format json` prints them ({"S": [...]}), or None."""
        cmd = self._site_ops(stack).bench("--site", site, "list-apps", "--format", "json")
        result = ctx.run(cmd.argv, timeout=min(timeout, 300), cwd=cmd.cwd, env=cmd.env, check=False)
        for line in reversed(result.output.splitlines()):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            apps = doc.get(site) if isinstance(doc, dict) else None
            if isinstance(apps, list) and all(isinstance(a, str) for a in apps):
                return apps
        ctx.log("could not record the site's apps (bench list-apps failed); the backup is kept without them")
        return None
