"""Notifications against a local SMTP receiver and a local HTTP receiver started by the tests."""

from __future__ import annotations

import base64
import email
import json
import logging
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support.ports import refused_port

from fmappliance.dashboard.notifications import Notifier, weekly_summary

DETAILS = {"stack": "prod", "site": "site1.example.com", "message": "bench backup exited with code 1"}


# ---- a tiny SMTP receiver (just enough of RFC 5321 for smtplib) ----------------------------


class SMTPHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        server = self.server
        self.reply("220 test ESMTP")
        envelope = {"rcpt": [], "auth": None}
        while True:
            line = self.rfile.readline().decode().rstrip("\r\n")
            if not line:
                return
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self.reply("250-test")
                self.reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                parts = line.split(" ")
                _, user, password = base64.b64decode(parts[2]).decode().split("\0")
                envelope["auth"] = (user, password)
                self.reply("235 ok" if password == server.password else "535 bad credentials")
            elif verb == "STARTTLS":
                self.reply("502 not here")
            elif verb == "MAIL":
                envelope["from"] = line
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line)
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk)
                envelope["data"] = b"".join(data)
                server.mails.append(envelope)
                server.received.set()
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("500 what")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SMTPHandler)
    server.daemon_threads = True
    server.mails, server.received, server.password = [], threading.Event(), "s3cret-mail-pass"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# ---- a tiny webhook receiver -----------------------------------------------------------------


class HookHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.posts.append((self.path, self.headers["Content-Type"], json.loads(body)))
        server.release.wait(5)
        self.send_response(server.status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        server.received.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def hook_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), HookHandler)
    server.daemon_threads = True
    server.posts, server.received, server.release, server.status = [], threading.Event(), threading.Event(), 204
    server.release.set()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def hook_url(server, path="/hooks/T0KEN-in-path") -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def smtp_settings(server, tmp_path, **overrides) -> dict:
    password_file = tmp_path / "smtp-password"
    password_file.write_text("s3cret-mail-pass\n")
    smtp = {
        "host": "127.0.0.1",
        "port": server.server_address[1],
        "starttls": False,
        "username": "mailer",
        "password_file": str(password_file),
        "from": "fm@example.com",
        "to": ["ops@example.com", "b@example.com"],
    }
    smtp.update(overrides)
    return {"webhook_url": "", "smtp": smtp, "events": ["backup_failed", "backup_missed"]}


# ---- tests -----------------------------------------------------------------------------------


def test_webhook_receives_the_event_as_json_without_blocking_the_caller(hook_server):
    notifier = Notifier({"webhook_url": hook_url(hook_server), "events": ["backup_failed"]})
    hook_server.release.clear()  # the receiver hangs until released
    assert notifier.notify("backup_failed", "Scheduled backup of site1 on prod failed", DETAILS) is True
    assert not hook_server.received.is_set()  # notify() returned while the receiver still hangs
    hook_server.release.set()
    assert notifier.flush(10)
    [(path, content_type, payload)] = hook_server.posts
    assert path == "/hooks/T0KEN-in-path" and content_type == "application/json"
    assert payload["event"] == "backup_failed"
    assert payload["subject"] == "Scheduled backup of site1 on prod failed"
    assert payload["details"] == DETAILS and payload["time"].endswith("Z")
    notifier.close()


def test_mail_is_sent_with_login_from_the_password_file(smtp_server, tmp_path):
    notifier = Notifier(smtp_settings(smtp_server, tmp_path))
    assert notifier.notify_sync("backup_missed", "Scheduled backup of every site on prod missed", DETAILS) == {
        "smtp": True
    }
    [mail] = smtp_server.mails
    assert mail["auth"] == ("mailer", "s3cret-mail-pass")
    assert len(mail["rcpt"]) == 2
    message = email.message_from_bytes(mail["data"])
    assert "Scheduled backup of every site on prod missed" in message["Subject"]
    assert message["To"] == "ops@example.com, b@example.com"
    body = message.get_payload()
    assert "bench backup exited with code 1" in body and "site: site1.example.com" in body


def test_events_not_chosen_are_not_sent(hook_server):
    notifier = Notifier({"webhook_url": hook_url(hook_server), "events": ["backup_missed"]})
    assert notifier.notify("backup_failed", "x", {}) is False
    assert notifier.notify_sync("backup_failed", "x", {}) == {}
    assert notifier.flush(5)
    assert hook_server.posts == []
    assert Notifier({"events": ["backup_failed"]}).notify("backup_failed", "x", {}) is False  # nowhere to send


def test_failing_webhook_is_logged_without_the_url_secret_and_not_raised(hook_server, caplog):
    hook_server.status = 500
    notifier = Notifier({"webhook_url": hook_url(hook_server), "events": ["backup_failed"]})
    with caplog.at_level(logging.ERROR, logger="fmappliance.dashboard.notifications"):
        assert notifier.notify_sync("backup_failed", "x", DETAILS) == {"webhook": False}
    assert "HTTP 500" in caplog.text and "T0KEN" not in caplog.text


def test_unreachable_webhook_and_mail_server_are_logged_not_raised(tmp_path, caplog):
    with refused_port() as port:  # nothing listens there
        settings = {
            "webhook_url": f"http://127.0.0.1:{port}/x",
            "events": ["backup_failed"],
            "smtp": {"host": "127.0.0.1", "port": port, "starttls": False, "to": ["ops@example.com"]},
        }
        notifier = Notifier(settings)
        with caplog.at_level(logging.ERROR, logger="fmappliance.dashboard.notifications"):
            assert notifier.notify("backup_failed", "x", DETAILS) is True
            assert notifier.flush(30)
    assert "by webhook" in caplog.text and "by mail" in caplog.text


def test_starttls_refused_or_wrong_password_fails_the_mail_quietly(smtp_server, tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="fmappliance.dashboard.notifications"):
        tls = Notifier(smtp_settings(smtp_server, tmp_path, starttls=True))
        assert tls.notify_sync("backup_failed", "x", DETAILS) == {"smtp": False}
        smtp_server.password = "another"
        wrong = Notifier(smtp_settings(smtp_server, tmp_path))
        assert wrong.notify_sync("backup_failed", "x", DETAILS) == {"smtp": False}
    assert smtp_server.mails == []
    assert "s3cret-mail-pass" not in caplog.text
    assert caplog.text.count("Could not send the backup_failed notification by mail") == 2


def test_weekly_summary_names_broken_schedules_and_failed_runs():
    status = [
        {"stack": "prod", "site": "*", "status": "ok", "last_run": {"result": "submitted", "job_status": "succeeded"}},
        {
            "stack": "erp",
            "site": "erp.example.com",
            "status": "broken",
            "broken_reason": "Stack 'erp' no longer exists",
            "last_run": {"result": "failed", "message": "agent down"},
        },
    ]
    subject, details = weekly_summary(status)
    assert "1 broken" in subject and "1 with a failed last run" in subject
    assert details["broken"] == ["erp/erp.example.com: Stack 'erp' no longer exists"]
    subject, _ = weekly_summary(status[:1])
    assert subject == "Backups: all 1 schedule(s) ran"


def test_weekly_summary_names_a_failed_proof_with_its_reason():
    stacks = {
        "stacks": [
            {
                "name": "prod",
                "sites": ["a.example.com"],
                "last_restore_tests": {
                    "a.example.com": {
                        "time": "2026-11-24T03:00:00Z",
                        "backup": "b1",
                        "source": "offsite",
                        "ok": False,
                        "message": "the database refused the dump",
                    }
                },
            }
        ]
    }
    _, details = weekly_summary([], stacks)
    assert details["restore_proofs"] == [
        "prod/a.example.com: restore test FAILED at 2026-11-24T03:00:00Z (backup b1, offsite): the database refused the dump"
    ]
    _, details = weekly_summary([])
    assert "restore_proofs" not in details, "without an agent to ask, the summary makes no claim about proofs"
