"""Failure notifications: a JSON webhook and/or mail, for the events the operator chose.

``Notifier(config["notifications"]).notify(event, subject, details)`` returns at once; a
single background thread does the sending, so a slow mail server never holds up the
scheduler or a page. Sending failures are logged and never raised: a broken mail setup
must not stop backups. Secrets (the SMTP password, a webhook URL that often embeds a
token) are never logged.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from fmappliance.wire import format_timestamp

if TYPE_CHECKING:  # the senders' modules load with the first notification, not at start
    import smtplib

log = logging.getLogger(__name__)

SEND_TIMEOUT = 10  # seconds, per webhook request and per SMTP conversation step
_STOP = object()


def _redacted_url(url: str) -> str:
    # Webhook URLs (Slack, Teams, ntfy...) carry their secret in the path or query.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}/..."


class Notifier:
    """Sends ``notify(event, subject, details)`` to the configured webhook and mail recipients."""

    def __init__(self, settings: Mapping | None):
        settings = settings or {}
        self.events = tuple(settings.get("events") or ())
        self.webhook_url = settings.get("webhook_url") or ""
        self.smtp = dict(settings.get("smtp") or {})
        self.hostname = socket.gethostname()
        #: The fleet name of the dashboard's own server (config.py derives it from fleet.local_name):
        #: every payload names the server its event is about (issue 24).
        self.server = str(settings.get("server") or "")
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """True when there is somewhere to send to."""
        return bool(self.webhook_url or (self.smtp.get("host") and self.smtp.get("to")))

    def wants(self, event: str) -> bool:
        return event in self.events and self.enabled

    def notify(self, event: str, subject: str, details: Mapping) -> bool:
        """Queue a notification; returns False when the event is not configured to be sent."""
        if not self.wants(event):
            return False
        self._ensure_thread()
        self._queue.put((event, subject, dict(details)))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far was sent (or failed); True when done in time."""
        done = threading.Event()
        self._ensure_thread()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = SEND_TIMEOUT * 3) -> None:
        """Send what is queued, then end the sender thread."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            self.notify_sync(*item)

    # ---- sending ----------------------------------------------------------------------

    def notify_sync(self, event: str, subject: str, details: Mapping) -> dict:
        """Send now, in the caller's thread; returns ``{"webhook": ok, "smtp": ok}`` for the
        channels configured. Never raises."""
        if event not in self.events:
            return {}
        results = {}
        server = str(details.get("server") or self.server)
        payload = {
            "event": event,
            "subject": subject,
            # (a Notifier built without a config names no server: nothing to add)
            "details": {**details, "server": server} if server else dict(details),
            **({"server": server} if server else {}),
            "host": self.hostname,
            "time": format_timestamp(),
        }
        if self.webhook_url:
            results["webhook"] = self._guard("webhook", event, self._send_webhook, payload)
        if self.smtp.get("host") and self.smtp.get("to"):
            results["smtp"] = self._guard("mail", event, self._send_mail, payload)
        return results

    @staticmethod
    def _guard(channel: str, event: str, send, payload) -> bool:
        try:
            send(payload)
        except Exception as exc:  # any failure: logged, never fatal
            log.error("Could not send the %s notification by %s: %s", event, channel, exc)
            return False
        log.info("Sent the %s notification by %s.", event, channel)
        return True

    def _send_webhook(self, payload: Mapping) -> None:
        import urllib.request

        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload, default=str).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "fmappliance-dashboard"},
        )
        try:
            with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:
                response.read(65536)
        except Exception as exc:
            # urllib errors may quote the full URL; name only the host.
            raise RuntimeError(
                f"{_redacted_url(self.webhook_url)}: {getattr(exc, 'reason', None) or exc.__class__.__name__}"
                + (f" (HTTP {exc.code})" if hasattr(exc, "code") else "")
            ) from None

    def _send_mail(self, payload: Mapping) -> None:
        import smtplib
        from email.message import EmailMessage

        cfg = self.smtp
        message = EmailMessage()
        message["Subject"] = f"[fmappliance {self.hostname}] {payload['subject']}"
        message["From"] = cfg.get("from") or "fmappliance@localhost"
        message["To"] = ", ".join(cfg["to"])
        lines = [payload["subject"], ""]
        details = dict(payload["details"])
        if details.get("message"):
            lines += [str(details.pop("message")), ""]
        lines += [f"{key}: {value}" for key, value in details.items()]
        lines += ["", f"Event: {payload['event']} on {payload['host']} at {payload['time']}"]
        message.set_content("\n".join(lines) + "\n")
        port = int(cfg.get("port") or 587)
        # Port 465 speaks TLS from the first byte (RFC 8314 "implicit TLS"); other ports
        # start in clear text and upgrade with STARTTLS when configured.
        smtp: smtplib.SMTP
        if port == 465:
            smtp = smtplib.SMTP_SSL(cfg["host"], port, timeout=SEND_TIMEOUT, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(cfg["host"], port, timeout=SEND_TIMEOUT)
        with smtp:
            smtp.ehlo()
            if port != 465 and cfg.get("starttls", True):
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if cfg.get("username"):
                password_file = cfg.get("password_file")
                if not password_file:
                    raise RuntimeError("smtp.username is set but smtp.password_file is not")
                password = Path(password_file).read_text().strip()
                smtp.login(cfg["username"], password)
            smtp.send_message(message)


def proof_line(stack: str, site: str, proof) -> str:
    """One site's last proof of restorability, as the weekly summary lists it."""
    if not isinstance(proof, Mapping):
        return f"{stack}/{site}: never proven restorable (no test restore yet)"
    source = proof.get("source") or "local"
    if proof.get("ok") is True:
        return f"{stack}/{site}: proven restorable at {proof.get('time')} from backup {proof.get('backup')} ({source})"
    return f"{stack}/{site}: restore test FAILED at {proof.get('time')} (backup {proof.get('backup')}, {source}): {proof.get('message') or 'no reason given'}"


def restore_proof_lines(stacks: Mapping | None) -> list[str]:
    """Each site's last proof from the agent's ``GET /stacks`` answer (``last_restore_tests``)."""
    if not isinstance(stacks, Mapping):
        return ["unknown: the agent could not be asked for the last test restores"]
    lines = []
    raw = stacks.get("stacks")
    for stack in raw if isinstance(raw, list) else []:
        if not isinstance(stack, Mapping) or not isinstance(stack.get("name"), str):
            continue
        proofs = stack.get("last_restore_tests")
        proofs = proofs if isinstance(proofs, Mapping) else {}
        sites = stack.get("sites")
        names = [s for s in sites if isinstance(s, str)] if isinstance(sites, list) else []
        for site in sorted(set(names) | {s for s in proofs if isinstance(s, str)}):
            lines.append(proof_line(stack["name"], site, proofs.get(site)))
    return lines


def weekly_summary(
    status: Sequence[Mapping],
    stacks: Mapping | None | bool = False,
    servers: Sequence[tuple[str, Sequence[Mapping], Mapping | None]] = (),
) -> tuple[str, dict]:
    """Subject and details of the ``weekly_summary`` event from ``ScheduleService.status()``.

    ``stacks`` is the agent's ``GET /stacks`` answer (None: the agent could not be asked);
    with it the summary lists each site's last proof of restorability.  ``servers`` adds the
    fleet's other servers, each ``(name, its status(), its GET /stacks or None)``: their lines
    are named ``server: stack/site`` and counted in the subject; ``details["servers"]`` has each.
    """
    everything = [(None, s) for s in status] + [(name, s) for name, items, _ in servers for s in items]

    def label(server: str | None, s: Mapping) -> str:
        return f"{server + ': ' if server else ''}{s['stack']}/{s['site']}"

    def failed_run(s: Mapping) -> bool:
        run = s.get("last_run") or {}
        return run.get("result") in ("failed", "missed") or run.get("job_status") == "failed"

    broken = [(n, s) for n, s in everything if s.get("status") == "broken"]
    failed = [(n, s) for n, s in everything if failed_run(s)]
    subject = (
        f"Backups: {len(everything)} schedule(s), {len(broken)} broken, {len(failed)} with a failed last run"
        if broken or failed
        else f"Backups: all {len(everything)} schedule(s) ran"
    )
    if servers:
        subject += f" on {len(servers) + 1} servers"
    details: dict = {
        "schedules": len(everything),
        "broken": [f"{label(n, s)}: {s.get('broken_reason')}" for n, s in broken],
        "failed_last_run": [f"{label(n, s)}: {(s.get('last_run') or {}).get('message', '')}" for n, s in failed],
    }
    if servers:
        details["servers"] = {
            name: {
                "schedules": len(items),
                "broken": sum(1 for s in items if s.get("status") == "broken"),
                "failed_last_run": sum(1 for s in items if failed_run(s)),
                "restore_proofs": restore_proof_lines(proofs),
            }
            for name, items, proofs in servers
        }
    if stacks is not False:
        proofs = restore_proof_lines(stacks if isinstance(stacks, Mapping) else None)
        details["restore_proofs"] = proofs
        # Mail shows the message as plain lines; the list above is for webhooks.
        details["message"] = "Last proof of restorability per site:\n" + "\n".join(f"  {p}" for p in proofs)
        for name, _, _ in servers:
            details["message"] += f"\n{name}:\n" + "\n".join(
                f"  {p}" for p in details["servers"][name]["restore_proofs"]
            )
    return subject, details
