"""Offsite copies with restic: the only module that runs restic.

Each verified backup set (its files and manifest) becomes one restic snapshot, taken from a stable
path per site (``<state_dir>/offsite/<stack>/<site>``) and tagged ``stack=``, ``site=``, ``backup=``,
so ``forget --prune`` (filtered by the stack and site tags) thins out each site on its own.
Credentials reach restic only through its environment: ``RESTIC_PASSWORD_FILE`` and the variables
of ``offsite.env_file`` -- never argv, the job output or a message.  restic's output is parsed
(``--json``) and never shown raw: a failure is one sentence naming its cause.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from datetime import datetime, timezone

from fmappliance import wire
from fmappliance.agent.backups.layout import parse_id
from fmappliance.agent.backups.retention import gfs_keep
from fmappliance.agent.errors import AgentError
from fmappliance.agent.jobs import StepFailed
from fmappliance.agent.runner import minimal_env, resolve_binary, run_command
from fmappliance.background_loop import BackgroundLoop
from fmappliance.config import read_env_file
from fmappliance.fleet.token import is_valid_server_name
from fmappliance.wire import is_valid_site_name

log = logging.getLogger(__name__)

#: restic's words for each failure cause, checked in this order, and the sentence the operator reads.
_CAUSES = (
    (
        ("wrong password", "no key found"),
        "The offsite repository refused the password (wrong password or no key found); check offsite.password_file.",
    ),
    (
        ("already locked", "repository is locked"),
        "The offsite repository is locked by another restic process; the copy is retried later "
        "(a lock left by a dead process needs `restic unlock`).",
    ),
    (
        ("connection refused", "no such host", "dial tcp", "i/o timeout", "network is unreachable", "no route to host"),
        "The offsite repository could not be reached (connection refused or no route); copies catch up once it answers.",
    ),
    (
        ("quota", "no space left", "entitytoolarge", "insufficient storage"),
        "The offsite repository is full (quota or disk space exhausted); free space or raise the quota.",
    ),
)
_NO_REPOSITORY = ("is there a repository at the following location", "repository does not exist")

# Listing for pages (issue 21.10): one `restic snapshots` per stack (all its sites), one at a time,
# in a background thread; a page waits briefly for it, and a failure is remembered for a while.
#: A page's listing's restic calls get this long (a slow repository must not hold a thread for many minutes).
LISTING_TIMEOUT_SECONDS = 120
#: A job's listing (before a copy or a restore) may take longer: the job has its own deadline.
JOB_LISTING_TIMEOUT_SECONDS = 600
#: How long a page request waits for a listing in flight before answering "try again".
LISTING_WAIT_SECONDS = 5
#: A failed listing is the answer to pages for this long, without asking restic again.
FAILURE_CACHE_SECONDS = 60
#: Snapshot manifests remembered (each one is a `restic dump`); beyond this the memory is cleared.
MAX_MANIFESTS = 5000


def failure_sentence(output: str, what: str) -> str:
    """One sentence naming why restic failed; the raw output (which may name hosts or paths) is not shown."""
    lowered = output.lower()
    for words, sentence in _CAUSES:
        if any(w in lowered for w in words):
            return sentence
    return f"The offsite {what} failed (restic reported an error that is not a known cause; see the agent log)."


class OffsiteFailed(StepFailed, AgentError):
    """A restic step failed; the text is the one-sentence cause.

    Inside a job it is a StepFailed (the job fails with the sentence); reaching a route (a page's listing, a
    restore's plan) it is an AgentError the error plugin answers with 502: the repository, not the request, failed.
    """

    def __init__(self, message: str):
        AgentError.__init__(self, 502, message)


#: What a page asking for a listing still being read is told to wait (Retry-After, seconds).
RETRY_SECONDS = 10


class OffsiteBusy(AgentError):
    """The listing a page asked for is still being read from the repository; ask again shortly (a 503)."""

    def __init__(self, message: str):
        super().__init__(503, message, headers={"Retry-After": str(RETRY_SECONDS)})


class _StackListings:
    """Per stack: the last listing (site -> snapshots), the last failure and when, the listing in flight.

    Keyed by configured stack names only (callers check them first), so it stays small.
    """

    def __init__(self, clock=time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._found: dict[str, dict[str, list[dict]]] = {}
        self._failure: dict[str, tuple[float, str]] = {}
        self._generation: dict[str, int] = {}
        self._flights: dict[str, threading.Event] = {}
        self._running: dict[str, threading.Lock] = {}

    def result(self, stack: str) -> dict[str, list[dict]] | None:
        with self._lock:
            return self._found.get(stack)

    def generation(self, stack: str) -> int:
        """How many listings of ``stack`` have ended (succeeded or failed)."""
        with self._lock:
            return self._generation.get(stack, 0)

    def running(self, stack: str) -> threading.Lock:
        """The lock a listing of ``stack`` holds: one restic listing per stack at a time."""
        with self._lock:
            return self._running.setdefault(stack, threading.Lock())

    def _fresh_failure(self, stack: str, any_age: bool) -> None:
        failure = self._failure.get(stack)
        if failure and (any_age or self.clock() - failure[0] < FAILURE_CACHE_SECONDS):
            raise OffsiteFailed(failure[1])

    def cached_or_failure(self, stack: str, *, any_age: bool = False) -> dict[str, list[dict]] | None:
        """The listing, None when there is none yet; OffsiteFailed when the last one failed recently."""
        with self._lock:
            self._fresh_failure(stack, any_age)
            return self._found.get(stack)

    def cached_or_flight(self, stack: str, start) -> dict[str, list[dict]] | threading.Event:
        """The listing; or the Event of the listing in flight, started in a thread (``start(stack, event)``)
        when there is none.  OffsiteFailed when the last listing failed recently."""
        with self._lock:
            self._fresh_failure(stack, False)
            found = self._found.get(stack)
            if found is not None:
                return found
            flight = self._flights.get(stack)
            if flight is None:
                flight = self._flights[stack] = threading.Event()
                threading.Thread(
                    target=start, args=(stack, flight), name=f"offsite-listing-{stack}", daemon=True
                ).start()
            return flight

    def landed(self, stack: str, flight: threading.Event) -> None:
        with self._lock:
            if self._flights.get(stack) is flight:
                del self._flights[stack]
        flight.set()

    def store(self, stack: str, found: dict[str, list[dict]]) -> None:
        with self._lock:
            self._found[stack] = found
            self._failure.pop(stack, None)
            self._generation[stack] = self._generation.get(stack, 0) + 1

    def failed(self, stack: str, sentence: str) -> None:
        with self._lock:
            self._failure[stack] = (self.clock(), sentence)
            self._generation[stack] = self._generation.get(stack, 0) + 1


class Offsite:
    """The offsite repository of this appliance: copies, listing, retention, checks, restores."""

    def __init__(self, config: dict, store, state_dir: str, *, redact=()):
        self.cfg = config["offsite"]
        self.store = store
        self.state_dir = state_dir
        self.redact = list(redact)
        self._listings = _StackListings()
        self._manifests: dict[str, dict] = {}
        self._lock = threading.Lock()
        # Jobs of different stacks run in parallel, but check and prune take restic's exclusive lock: two offsite
        # jobs at once would fail one with "repository is locked".  This agent's own jobs take turns instead.
        self._repository_turn = threading.Lock()
        # Set once `restic cat config` (or init) succeeded: later copies skip that round trip.  A listing that
        # finds no repository (deleted since) clears it, so the next copy initialises it again.
        self._repository_known = False
        self._listed_host = self._host_now()
        self.clean_stage()
        if hasattr(store, "offsite_stage"):  # the store serves a published file linked into this stage (only there)
            store.offsite_stage = os.path.join(state_dir, "offsite")

    def host(self) -> str:
        """restic ``--host`` of this server's copies: ``offsite.host``, else its fleet name once it joined
        (``fleet.json``, read each time: a join applies without restart), else :data:`LEGACY_HOST`.

        Listing, retention and restores see only this host's snapshots: two servers sharing a repository
        with the same stack and site names never list, prune or restore each other's copies.
        """
        host = self._host_now()
        with self._lock:
            if host != self._listed_host:
                # Joined or left since: the cached listings were another host's (rare: one re-listing).
                log.info("offsite copies are now those of host %s (was %s)", host, self._listed_host)
                self._listings = _StackListings()
                self._listed_host = host
        return host

    def _host_now(self) -> str:
        return self.cfg.get("host") or _fleet_name(self.state_dir) or LEGACY_HOST

    def clean_stage(self) -> None:
        """Remove copy stages (and offsite restore staging) an agent that died mid-job left behind."""
        for name in ("offsite", "offsite-restore"):
            shutil.rmtree(os.path.join(self.state_dir, name), ignore_errors=True)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.get("repository"))

    # ------------------------------------------------------------------ running restic

    def _env(self) -> tuple[dict, list[str]]:
        """The child's environment and the values to mask; the env file is re-read so a fix applies at once."""
        env = minimal_env()
        env["RESTIC_REPOSITORY"] = self.cfg["repository"]
        env["RESTIC_PASSWORD_FILE"] = self.cfg["password_file"]
        env["RESTIC_CACHE_DIR"] = os.path.join(self.state_dir, "restic-cache")
        extra = read_env_file(self.cfg["env_file"]) if self.cfg.get("env_file") else {}
        env.update(extra)
        masked = [v for v in extra.values() if len(v) >= 6]
        try:
            with open(self.cfg["password_file"], encoding="utf-8") as fh:
                masked.append(fh.read().strip())
        except OSError:
            pass
        return env, [m for m in masked if m] + self.redact

    def _argv(self, *args: str) -> list[str]:
        binary = resolve_binary(self.cfg["restic_binary"])
        if binary is None:
            raise OffsiteFailed(f"restic was not found ({self.cfg['restic_binary']}); install the restic package.")
        argv = [binary]
        for option in self.cfg.get("options") or []:
            argv += ["-o", option]
        return argv + list(args)

    def restic(self, *args: str, timeout: float = 3600, on_line=None, what: str = "copy", check: bool = True):
        """Run restic with ``args``; its output is parsed, never shown; raises OffsiteFailed with the cause."""
        env, masked = self._env()
        result = run_command(
            self._argv(*args), timeout=timeout, env=env, redact=masked, on_output=on_line, parsed_only=True
        )
        if check and not result.ok:
            log.warning("restic %s failed: %s", args[0], (result.error or result.output)[-2000:])
            if result.error and not result.output:
                raise OffsiteFailed(f"restic could not run: {result.error}")
            raise OffsiteFailed(failure_sentence(result.output + (result.error or ""), what))
        return result

    def _list_snapshots(self, tag: str, *, timeout: float = 3600, check: bool = True):
        """``restic snapshots --json`` of this server's copies carrying ``tag`` (a failure is a listing's)."""
        return self.restic(
            "snapshots", "--json", "--host", self.host(), "--tag", tag, timeout=timeout, what="listing", check=check
        )

    def ensure_repository(self, ctx=None) -> bool:
        """Initialise the repository when it does not exist yet; True when it was initialised now."""
        result = self.restic("cat", "config", timeout=300, check=False)
        if result.ok:
            self._repository_known = True
            return False
        if not any(m in result.output.lower() for m in _NO_REPOSITORY):
            log.warning("restic cat config failed: %s", result.output[-2000:])
            raise OffsiteFailed(failure_sentence(result.output + (result.error or ""), "copy"))
        self.restic("init", timeout=300)
        self._repository_known = True
        if ctx is not None:
            ctx.log("the offsite repository did not exist yet: initialised it (restic init)")
        return True

    # ------------------------------------------------------------------ listing

    def snapshots(self, stack: str, site: str, *, refresh: bool = False) -> list[dict]:
        """{id, backup, created, size, files} of a site's snapshots, newest first (cached until a copy).

        For jobs (it may take minutes): ``refresh`` lists the stack again.  Pages use
        :meth:`snapshots_for_page`.
        """
        found = self._listings.result(stack)
        if refresh or found is None:
            found = self._list_stack(stack, JOB_LISTING_TIMEOUT_SECONDS)
        return found.get(site, [])

    def snapshots_for_page(self, stack: str, site: str) -> list[dict]:
        """The listing for a request thread: from the cache, the remembered failure (OffsiteFailed), or a
        listing started in the background and waited for up to :data:`LISTING_WAIT_SECONDS` (else OffsiteBusy).

        The caller checks ``stack`` and ``site`` against the inventory first: made-up names cost nothing.
        """
        flight = self._listings.cached_or_flight(stack, self._background_listing)
        if isinstance(flight, dict):
            return flight.get(site, [])
        flight.wait(LISTING_WAIT_SECONDS)
        found = self._listings.cached_or_failure(stack)
        if found is None:
            raise OffsiteBusy(
                "The offsite copies are still being listed (the repository answers slowly); reload in a moment."
            )
        return found.get(site, [])

    def _background_listing(self, stack: str, flight: threading.Event) -> None:
        try:
            self._list_stack(stack, LISTING_TIMEOUT_SECONDS)
        except OffsiteFailed:
            pass  # remembered by _list_stack; pages show its sentence
        except Exception:
            log.exception("listing the offsite copies of %s failed", stack)
        finally:
            self._listings.landed(stack, flight)

    def _list_stack(self, stack: str, timeout: float) -> dict[str, list[dict]]:
        """List every site of ``stack`` (one restic call); one listing per stack at a time.

        A caller that waited while another listing of the stack ran takes that one's result.
        """
        asked = self._listings.generation(stack)
        with self._listings.running(stack):
            if self._listings.generation(stack) > asked:
                found = self._listings.cached_or_failure(stack, any_age=True)
                if found is not None:
                    return found
            try:
                found = self._read_stack(stack, timeout)
            except OffsiteFailed as exc:
                self._listings.failed(stack, str(exc))
                raise
            self._listings.store(stack, found)
            return found

    def _read_stack(self, stack: str, timeout: float) -> dict[str, list[dict]]:
        result = self._list_snapshots(f"stack={stack}", timeout=timeout, check=False)
        if not result.ok:
            if any(m in result.output.lower() for m in _NO_REPOSITORY):
                self._repository_known = False
                return {}  # nothing copied yet: the first copy initialises the repository
            log.warning("restic snapshots failed: %s", (result.error or result.output)[-2000:])
            raise OffsiteFailed(failure_sentence(result.output + (result.error or ""), "listing"))
        return self._entries(stack, json_array(result.output), timeout)

    def _entries(self, stack: str, snaps: list[dict], timeout: float) -> dict[str, list[dict]]:
        """Listing entries (site -> snapshots, newest first) of restic's snapshot objects of ``stack``."""
        by_site: dict[str, list[dict]] = {}
        for snap in snaps:
            tags = dict(t.split("=", 1) for t in snap.get("tags") or [] if "=" in t)
            backup, site = tags.get("backup"), tags.get("site") or ""
            if not backup or tags.get("stack") != stack or not is_valid_site_name(site):
                continue
            manifest = self._snapshot_manifest(snap, backup, timeout)
            files = [{k: f[k] for k in ("name", "size", "sha256")} for f in (manifest or {}).get("files", [])]
            by_site.setdefault(site, []).append(
                {
                    "id": snap["short_id"] if "short_id" in snap else snap["id"][:8],
                    "backup": backup,
                    "created": backup_time(backup),
                    "size": sum(f["size"] for f in files),
                    "files": files,
                    "label": (manifest or {}).get("label") or "",
                    "apps": (manifest or {}).get("apps"),
                    "encrypted": (manifest or {}).get("encrypted") is True,
                }
            )
        for snaps in by_site.values():
            snaps.sort(key=lambda s: s["backup"], reverse=True)
        return by_site

    def _snapshot_manifest(self, snap: dict, backup: str, timeout: float = LISTING_TIMEOUT_SECONDS) -> dict | None:
        """The backup's manifest as stored in the snapshot (read once from the repository, then remembered)."""
        full_id = snap["id"]
        if full_id in self._manifests:
            return self._manifests[full_id]
        path = (snap.get("paths") or ["/"])[0].rstrip("/") + f"/{backup}.json"
        result = self.restic("dump", full_id, path, timeout=timeout, check=False, what="listing")
        try:
            manifest = json.loads(result.output) if result.ok else None
        except ValueError:
            manifest = None
        if manifest is not None:
            with self._lock:
                if len(self._manifests) >= MAX_MANIFESTS:
                    self._manifests.clear()
                self._manifests[full_id] = manifest
        return manifest

    def last_and_lag(self, stack: str, site: str) -> tuple[dict | None, int]:
        """(last_offsite {"time","backup"} or None, offsite_lag) from the cached listing; (None, 0) when unknown."""
        listed = self._listings.result(stack)
        if listed is None:
            return None, 0
        snaps = listed.get(site, [])
        last = {"time": snaps[0]["created"], "backup": snaps[0]["backup"]} if snaps else None
        newest = snaps[0]["backup"] if snaps else ""
        local = self.store.list_backups(stack, site)
        return last, sum(1 for b in local if b["verified"] is True and b["id"] > newest)

    # ------------------------------------------------------------------ copying

    def missing(self, stack: str, site: str, snaps: list[dict]) -> list[dict]:
        """Verified local backups not offsite that offsite retention would keep, oldest first."""
        offsite = {s["backup"] for s in snaps}
        newest = max(offsite, default="")
        local = [b for b in self.store.list_backups(stack, site) if b["verified"] is True and b["id"] not in offsite]
        keep = gfs_keep(sorted(offsite | {b["id"] for b in local}), self.cfg["retention"])
        keep.update(
            sorted(offsite | {b["id"] for b in local}, reverse=True)[: int(self.cfg["retention"].get("keep_last", 0))]
        )
        return sorted(
            (b for b in local if b["id"] in keep or b["id"] > newest),
            key=lambda b: b["id"],
        )

    @contextlib.contextmanager
    def _turn(self, ctx):
        """Hold the repository for one offsite job of this agent (others wait, saying so)."""
        if not self._repository_turn.acquire(blocking=False):
            ctx.log("waiting for another offsite job of this server to finish with the repository")
            if not self._repository_turn.acquire(timeout=max(1.0, ctx.deadline_left())):
                raise OffsiteFailed("Another offsite job kept the repository busy until this job's time ran out.")
        try:
            yield
        finally:
            self._repository_turn.release()

    def copy_site(self, ctx, stack: str, site: str) -> dict:
        """Copy every verified local backup of a site not yet offsite, then apply offsite retention."""
        with self._turn(ctx):
            return self._copy_site(ctx, stack, site)

    def _copy_site(self, ctx, stack: str, site: str) -> dict:
        if not self._repository_known:
            self.ensure_repository(ctx)
        snaps = self.snapshots(stack, site, refresh=True)
        if not self._repository_known:  # the listing found none: deleted since this agent last saw it
            self.ensure_repository(ctx)
        todo = self.missing(stack, site, snaps)
        if not todo:
            ctx.log(f"every verified backup of {site} on {stack} is already offsite")
        copied, sent = [], 0
        uploaded: dict[str, dict] = {}  # short snapshot id -> the manifest it holds (saves a `restic dump` each)
        for backup in todo:
            manifest = self.store.get_manifest(stack, site, backup["id"])
            if manifest is None:  # removed by local retention since the listing
                continue
            ctx.log(f"== copying backup {backup['id']} offsite")
            summary, stored = self._backup_one(ctx, stack, site, manifest)
            if isinstance(summary.get("snapshot_id"), str) and stored is not None:
                uploaded[summary["snapshot_id"][:8]] = stored
            sent += int(summary.get("data_added", 0))
            copied.append(backup["id"])
            ctx.log(
                f"snapshot {summary.get('snapshot_id', '?')[:8]}: {summary.get('total_bytes_processed', 0)} bytes read, "
                f"{summary.get('data_added', 0)} bytes sent"
            )
        if copied:
            kept = self.forget(ctx, stack, site)
            self._relist_site(stack, site, kept, uploaded)
        ctx.message = (
            f"{len(copied)} backup(s) of {site} on {stack} copied offsite ({sent} bytes sent)."
            if copied
            else f"Nothing to copy: every verified backup of {site} on {stack} is offsite."
        )
        return {"copied": copied, "bytes_sent": sent}

    def _relist_site(self, stack: str, site: str, kept: list[dict] | None, uploaded: dict[str, dict]) -> None:
        """After a copy: the site's listing from the snapshots ``forget`` kept (filtered by the same host and
        tags, so the set `restic snapshots` would list now), the manifests just uploaded remembered instead of
        dumped again.  The stack's other sites keep the listing read at the job's start."""
        if kept is None:  # forget's output not understood: ask restic
            self.snapshots(stack, site, refresh=True)
            return
        for snap in kept:
            full, short = snap.get("id"), snap.get("short_id")
            manifest = uploaded.get(short if isinstance(short, str) else str(full)[:8])
            if isinstance(full, str) and manifest is not None:
                with self._lock:
                    if len(self._manifests) >= MAX_MANIFESTS:
                        self._manifests.clear()
                    self._manifests[full] = manifest
        with self._listings.running(stack):
            found = dict(self._listings.result(stack) or {})
            entries = self._entries(stack, kept, JOB_LISTING_TIMEOUT_SECONDS).get(site)
            if entries:
                found[site] = entries
            else:
                found.pop(site, None)
            self._listings.store(stack, found)

    def _backup_one(self, ctx, stack: str, site: str, manifest: dict) -> tuple[dict, dict | None]:
        """Upload one backup set; returns restic's summary and the manifest as uploaded (None if unreadable)."""
        stage = os.path.join(self.state_dir, "offsite", stack, site)
        shutil.rmtree(stage, ignore_errors=True)
        names = [f["name"] for f in manifest["files"]] + [manifest["id"] + ".json"]
        self._check_room(
            os.path.dirname(stage), sum(f["size"] for f in manifest["files"]), f"stage backup {manifest['id']}"
        )
        os.makedirs(stage, mode=0o700)
        try:
            for name in names:
                # A hard link to the very file open_published_file verified (a copy when the stage is on another
                # file system): the store serves a file with a second link only when that link is this stage's
                # (a planted alias elsewhere stays refused), and a crash's leftover stage is removed at start.
                src, st = self.store.open_published_file(stack, site, name)
                with src:
                    _stage_file(
                        src.fileno(), st, self.store.published_path(stack, site, name), os.path.join(stage, name)
                    )
            when = parse_id(manifest["id"]).replace(tzinfo=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            args = ["backup", "--json", "--time", when, "--host", self.host()]
            for tag in (f"stack={stack}", f"site={site}", f"backup={manifest['id']}"):
                args += ["--tag", tag]
            if self.cfg.get("limit_upload_kbps"):
                args += ["--limit-upload", str(self.cfg["limit_upload_kbps"])]
            summary: dict = {}
            shown = [-1]

            def on_line(line: str) -> None:
                try:
                    doc = json.loads(line)
                except ValueError:
                    return
                if not isinstance(doc, dict):
                    return
                if doc.get("message_type") == "summary":
                    summary.update(doc)
                elif doc.get("message_type") == "status":
                    tenth = int(float(doc.get("percent_done", 0)) * 10)
                    if tenth > shown[0]:
                        shown[0] = tenth
                        ctx.log(f"{tenth * 10}% read, {doc.get('bytes_done', 0)} of {doc.get('total_bytes', 0)} bytes")

            self.restic(*args, stage, timeout=max(60, min(ctx.deadline_left(), 86400)), on_line=on_line)
            try:
                with open(os.path.join(stage, manifest["id"] + ".json"), encoding="utf-8") as fh:
                    stored = json.load(fh)
            except (OSError, ValueError):
                stored = None
            return summary, stored if isinstance(stored, dict) else None
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    @staticmethod
    def _check_room(path: str, needed: int, what: str) -> None:
        """Refuse to start a copy that cannot fit (a full disk mid-way would fail it later, less clearly)."""
        probe = path
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        free = shutil.disk_usage(probe).free
        if free < needed:
            raise OffsiteFailed(
                f"Not enough free space in {probe} to {what}: about {-(-needed >> 20)} MiB needed, "
                f"{free >> 20} MiB free; free space there first."
            )

    def forget(self, ctx, stack: str, site: str) -> list[dict] | None:
        """Apply the offsite retention to this site's snapshots only (filtered by tags, one group).

        Returns the snapshots kept (restic's snapshot objects), None when restic's output held no groups."""
        ret = self.cfg["retention"]
        # --host: only this server's copies (another server may share the repository and the names).
        args = ["forget", "--json", "--prune", "--host", self.host(), "--tag", f"stack={stack},site={site}"]
        args += ["--group-by", ""]
        for tier, flag in (("daily", "--keep-daily"), ("weekly", "--keep-weekly"), ("monthly", "--keep-monthly")):
            if int(ret.get(tier, 0)):
                args += [flag, str(int(ret[tier]))]
        args += ["--keep-last", str(max(1, int(ret.get("keep_last", 0))))]
        result = self.restic(*args, timeout=max(60, min(ctx.deadline_left(), 86400)), what="retention")
        removed = 0
        kept: list[dict] | None = None
        for line in result.output.splitlines():
            try:
                groups = json.loads(line)
            except ValueError:
                continue
            if isinstance(groups, list):
                kept = kept or []
                for group in groups:
                    if isinstance(group, dict):
                        removed += len(group.get("remove") or [])
                        kept += [s for s in group.get("keep") or [] if isinstance(s, dict)]
        ctx.log(f"offsite retention removed {removed} snapshot(s) of {site} on {stack}")
        return kept

    # ------------------------------------------------------------------ checking

    def check(self, ctx) -> dict:
        """`restic check --read-data-subset`: a percentage as is, else rotating n/N by week."""
        subset = self.cfg.get("check_subset") or "5%"
        if subset.endswith("%"):
            try:
                share = float(subset[:-1])
            except ValueError:
                share = 5.0
            parts = max(1, round(100 / share)) if share > 0 else 1
            week = datetime.now(timezone.utc).isocalendar()
            subset = f"{(week[0] * 53 + week[1]) % parts + 1}/{parts}"
        with self._turn(ctx):
            ctx.log(f"checking the offsite repository, reading data subset {subset}")
            self.restic(
                "check", f"--read-data-subset={subset}", timeout=max(60, min(ctx.deadline_left(), 86400)), what="check"
            )
        ctx.message = f"The offsite repository passed its check (data subset {subset})."
        return {"subset": subset}

    # ------------------------------------------------------------------ restoring

    def manifest_of(self, stack: str, site: str, backup: str) -> dict | None:
        """The manifest of a site's offsite copy of ``backup`` (None when the repository has no such copy)."""
        snaps = self.snapshots(stack, site, refresh=True)
        if not any(s["backup"] == backup for s in snaps):
            return None
        result = self._list_snapshots(f"backup={backup},stack={stack},site={site}")
        for snap in json_array(result.output):
            manifest = self._snapshot_manifest(snap, backup)
            if manifest is not None:
                return manifest
        return None

    def stage_for_restore(self, ctx, stack: str, site: str, manifest: dict, staging: str) -> StagedSource:
        """Restore a snapshot into a private dir and check every file against its manifest's sha256."""
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging, mode=0o700)
        ctx.log(f"== fetching the offsite copy of backup {manifest['id']}")
        with self._turn(ctx):
            folder, stored = self.restore_into(
                stack, site, manifest["id"], staging, timeout=max(60, ctx.deadline_left())
            )
        if stored.get("files") != manifest.get("files"):
            raise OffsiteFailed("The offsite copy's manifest differs from the one listed; refusing to restore from it.")
        for entry in manifest["files"]:
            path = os.path.join(folder, entry["name"])
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            except OSError:
                raise OffsiteFailed(f"The offsite copy lacks {entry['name']}; refusing to restore from it.") from None
            if digest.hexdigest() != entry["sha256"] or os.path.getsize(path) != entry["size"]:
                raise OffsiteFailed(
                    f"{entry['name']} from the offsite copy does not match the sha256 in its manifest; "
                    "the copy is damaged, pick another backup."
                )
        ctx.log(f"every file of the offsite copy matches its manifest ({len(manifest['files'])} files)")
        return StagedSource(self.store, folder)

    def restore_into(self, stack: str, site: str, backup: str, target: str, timeout: float = 7200) -> tuple[str, dict]:
        """Restore a backup's snapshot under ``target``; returns (dir holding its files, its manifest)."""
        snap = next((s for s in self.snapshots(stack, site) if s["backup"] == backup), None)
        if snap is None:
            raise OffsiteFailed(f"There is no offsite copy of backup {backup} of {site} on {stack}.")
        size = snap.get("size")
        if isinstance(size, int) and size > 0:
            self._check_room(target, size, f"restore backup {backup} from offsite")
        self.restic("restore", snap["id"], "--target", target, timeout=timeout, what="restore")
        for root, _dirs, files in os.walk(target):
            if backup + ".json" in files:
                with open(os.path.join(root, backup + ".json"), encoding="utf-8") as fh:
                    return root, json.load(fh)
        raise OffsiteFailed(f"The offsite copy of backup {backup} holds no manifest.")


def _stage_file(src_fd: int, st: os.stat_result, source: str, target: str) -> None:
    """Give ``target`` the inode open as ``src_fd`` (singly linked, checked by the store): a hard link of
    ``source`` (its published name, never followed as a symlink) when it proves to be that very inode with
    exactly two links now, else a copy of the bytes of ``src_fd``."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:  # another file system (EXDEV), links not allowed: copy
        _copy_file(src_fd, target)
        return
    linked, now = os.lstat(target), os.fstat(src_fd)
    if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino) or now.st_nlink != 2:
        # the name was swapped since it was opened, or someone else linked the file: the bytes verified, copied
        os.unlink(target)
        _copy_file(src_fd, target)


def _copy_file(src_fd: int, target: str) -> None:
    """Copy an open file to a new ``target`` (never through a link): a reflink when the file system can,
    else copy_file_range (done in the kernel), else read/write."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.ioctl(fd, _FICLONE, src_fd)
            return
        except OSError:
            pass
        offset = 0
        while True:
            try:
                done = os.copy_file_range(src_fd, fd, 1 << 30, offset, offset)
            except OSError:
                break  # not supported between these file systems: plain copy below from where it stopped
            if done == 0:
                return
            offset += done
        os.lseek(src_fd, offset, os.SEEK_SET)
        os.lseek(fd, offset, os.SEEK_SET)
        while chunk := os.read(src_fd, 1 << 20):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


#: ioctl FICLONE (linux/fs.h): make ``fd`` share ``src_fd``'s blocks (btrfs, XFS with reflink=1).
_FICLONE = 0x40049409


class StagedSource:
    """The backup store, except that published files are read from a restored offsite copy."""

    def __init__(self, store, folder: str):
        self._store = store
        self.folder = folder

    def __getattr__(self, name):
        return getattr(self._store, name)

    def published_path(self, stack: str, site: str, name: str) -> str:
        # a compose restore copies the checked parts into the container by path: from here, not the local store
        staged = os.path.join(self.folder, os.path.basename(name))
        if not os.path.exists(staged):
            return self._store.published_path(stack, site, name)
        return staged

    def open_published_file(self, stack: str, site: str, name: str):
        if not os.path.exists(os.path.join(self.folder, os.path.basename(name))):
            # a file of a local backup (the safety backup a roll-back restores)
            return self._store.open_published_file(stack, site, name)
        fd = os.open(os.path.join(self.folder, os.path.basename(name)), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fileobj = os.fdopen(fd, "rb")
        return fileobj, os.fstat(fd)


#: The restic host of every copy made before hosts followed the server (and of servers not in a fleet).
LEGACY_HOST = "fmappliance"


def _fleet_name(state_dir: str) -> str | None:
    """This server's fleet name from ``<state_dir>/fleet.json`` (None when it has not joined)."""
    try:
        with open(os.path.join(state_dir, "fleet.json"), encoding="utf-8") as fh:
            name = json.load(fh).get("server")
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and is_valid_server_name(name) else None


def json_array(output: str) -> list:
    """The JSON array restic printed (the last line that is one; warnings may share the output)."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("["):
            try:
                found = json.loads(line)
            except ValueError:
                continue
            return [item for item in found if isinstance(item, dict)] if isinstance(found, list) else []
    return []


def backup_time(backup_id: str) -> str:
    """A backup id (its UTC creation time) as an API timestamp."""
    return wire.backup_time(backup_id)


class OffsiteTimer:
    """A small thread: hourly, an offsite_copy job for every site with local backups (the catch-up that makes
    sure nothing stays behind after a failed copy); weekly, an offsite_check job.  Jobs de-duplicate, so a copy
    already queued after a backup is not doubled."""

    COPY_EVERY = 3600.0
    CHECK_EVERY = 7 * 86400.0
    FIRST_DELAY = 120.0

    def __init__(self, config: dict, actions, store):
        self.config = config
        self.actions = actions
        self.store = store
        self.stamp = os.path.join(config["agent"]["state_dir"], "offsite-last-check")
        # Not at once: the agent's start (and a backup it may be finishing) goes first.
        self._background = BackgroundLoop(
            "offsite-timer",
            self.tick,
            lambda: self.COPY_EVERY,
            first_delay=self.FIRST_DELAY,
            logger=log,
            failure="the offsite catch-up round failed",
        )

    def start(self) -> OffsiteTimer:
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()

    def tick(self, now: float | None = None) -> list[dict]:
        """Queue the due jobs; returns them."""
        import time

        now = time.time() if now is None else now
        queued = []
        for stack in self.config["stacks"]:
            root = os.path.join(self.store.base_path, stack)
            try:
                sites = sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
            for site in sites:
                if not self.store.list_backups(stack, site):
                    continue
                try:
                    # The agent's own work: security.allowed_actions governs API requests only.
                    queued.append(self.actions.start("offsite_copy", stack, site, own_work=True)[0])
                except Exception as exc:  # a site gone from the stack: nothing to copy there
                    log.info("no offsite catch-up for %s on %s: %s", site, stack, exc)
        try:
            last_check = os.stat(self.stamp).st_mtime
        except OSError:
            last_check = 0.0
        if now - last_check >= self.CHECK_EVERY:
            queued.append(self.actions.start("offsite_check", "", own_work=True)[0])
            with open(self.stamp, "w", encoding="utf-8") as fh:
                fh.write(str(now))
        return queued
