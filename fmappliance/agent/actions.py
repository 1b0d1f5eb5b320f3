"""The allow-list: each action name becomes a background job made of argv steps.

There is no generic exec: only the actions below exist, every argv is built by the module of
the stack's type (stacks/) from names the inventory vouched for, and each action has its own overall time limit
(``agent.action_timeouts``).  The stack's status cache is dropped when a job starts and
when it ends.
"""

from __future__ import annotations

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

    def __init__(self, config: dict, inventory: Inventory, jobs: JobManager, store, status=None):
        self.config = config
        self.inventory = inventory
        self.jobs = jobs
        self.store = store
        self.status = status
        self.allowed = set(config["security"]["allowed_actions"])
        self.timeouts = config["agent"]["action_timeouts"]
        self.state_dir = config["agent"]["state_dir"]

    # ------------------------------------------------------------------ requests

    def start(self, action: str, stack_name, site=None) -> tuple[dict, bool, str]:
        """Check and queue an action; returns (job, created, message) or raises ActionRejected.

        ``action`` is one of names.ACTIONS (app.py refuses any other with a 400 first).
        """
        if action not in self.allowed:
            raise ActionRejected(403, f"The action {action} is not allowed on this server (security.allowed_actions).")
        try:
            stack = self.inventory.check_stack(stack_name)
            if action in SITE_ACTIONS:
                site = self.inventory.check_site(stack_name, site)
        except NameRejected as exc:
            raise ActionRejected(exc.status, exc.message) from None
        except SitesUnavailable as exc:
            raise ActionRejected(409, f"The sites of stack {stack_name} cannot be checked right now: {exc}") from None
        body = self._body(action, stack_name, stack, site)
        message = _STARTED[action].format(stack=stack_name, site=site)
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

    def _invalidate(self, job: dict) -> None:
        if self.status is not None:
            self.status.invalidate(job["stack"])

    # ------------------------------------------------------------------ job bodies

    def _body(self, action: str, name: str, stack: dict, site: str | None):
        timeout = self.timeouts[action]

        def body(ctx: JobContext):
            if action == "backup_site":
                assert site is not None  # start() checked it against the inventory
                manifest = self._backup(ctx, name, stack, site, timeout)
                return {"backup": manifest}
            if action == "update_stack":
                return self._update(ctx, name, stack, timeout)
            kind = stacks.for_stack(stack)
            kind.run_action(ctx, self._binary(kind.BINARY_KEY), action, stack, site, timeout)
            return None

        return body

    def _binary(self, key: str) -> str:
        name = self.config["agent"][key]
        path = resolve_binary(name)
        if path is None:
            raise StepFailed(f"`{name}` was not found (agent.{key}); install it or set its full path in the config.")
        return path

    def _update(self, ctx, name, stack, timeout):
        try:
            sites = self.inventory.sites(name, refresh=True)
        except SitesUnavailable as exc:
            raise StepFailed(f"Update stopped before it began: {exc}") from None
        backups = {}
        for site in sites:
            ctx.log(f"== backing up {site} before the update")
            try:
                backups[site] = self._backup(ctx, name, stack, site, timeout)["id"]
            except StepFailed as exc:
                raise StepFailed(
                    f"Update stopped before changing anything: the backup of {site} failed: {exc}"
                ) from None
        kind = stacks.for_stack(stack)
        kind.update(ctx, self._binary(kind.BINARY_KEY), stack, sites, timeout)
        ctx.message = (
            f"Stack {name} updated; backups taken first: "
            + (", ".join(f"{s} ({i})" for s, i in backups.items()) or "none (no sites)")
            + "."
        )
        return {"backups": backups}

    # ------------------------------------------------------------------ backup

    def _check_room(self, needed: int, staging: str) -> None:
        """Refuse a copy out of a container that would not fit in staging and then in base_path."""
        from fmappliance.agent.backups import BackupError

        try:
            self.store.check_room_for_copy(needed, staging)
        except BackupError as exc:
            raise StepFailed(f"The backup was not copied: {exc}.") from None

    def _backup(self, ctx, name: str, stack: dict, site: str, timeout: float) -> dict:
        """Run `bench backup --with-files`, collect its files, publish them verified, apply retention."""
        from fmappliance.agent.backups import BackupError

        started = time.time()
        staging = os.path.join(self.state_dir, "staging", ctx.job_id + "-" + site)
        try:
            kind = stacks.for_stack(stack)
            sources = kind.collect_backup_files(
                ctx, self._binary(kind.BINARY_KEY), stack, site, timeout, started, staging, self._check_room
            )
            ctx.log(f"== verifying and publishing {', '.join(sorted(sources))}")
            try:
                # Nothing below the source root is followed as a link; publish also refuses
                # anything but regular files, and checks their sizes against the free space.
                manifest = self.store.publish(name, site, sources, source_root=kind.source_root(stack, staging))
            except BackupError as exc:
                raise StepFailed(f"The backup of {site} failed verification and was not published: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        try:
            removed = self.store.apply_retention(name, site)
            if removed:
                ctx.log("retention removed: " + ", ".join(removed))
        except Exception:  # a retention problem must not turn a good backup into a failure
            log.exception("retention for %s/%s failed", name, site)
            ctx.log("retention could not run; see the agent log")
        ctx.message = f"Backup {manifest['id']} of {site} on {name} verified and published."
        return manifest
