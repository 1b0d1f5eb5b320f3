"""Encrypted bench backups: `-enc` parts are ``gpg --symmetric`` output keyed by the site's
``backup_encryption_key`` (frappe `frappe/utils/backups.py`; docs/doubles.md, "Restores"), which sits in the backup's own, unencrypted, site config.

A part is verified by decrypting it in a stream (runner.StreamFilter): the passphrase goes to gpg
through a pipe (``--passphrase-fd``), never in an argv or the environment, and the plaintext is
checked like any other part and not kept.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from fmappliance.agent.backups.bench_names import is_encrypted_name
from fmappliance.agent.backups.verify import CheckFailed, DumpCheck, TarOrTgzCheck
from fmappliance.agent.runner import StreamFilter, resolve_binary

_MAX_CONFIG = 16 << 20


def encrypted_checker(part: str, source_name: str, passphrase: str | None):
    """(check, published suffix) of an encrypted part: ``<id>.sql.gz.gpg``, ``<id>.files.tar.gpg``."""
    if passphrase is None:
        raise CheckFailed("is encrypted but the site config backup holds no backup_encryption_key to open it")
    inner = DumpCheck() if part == "database" else TarOrTgzCheck()
    if part == "database":
        ext = ".sql.gz"
    else:
        ext = f".{part}.tgz" if source_name.endswith(".tgz") else f".{part}.tar"
    return GpgCheck(inner, passphrase), ext + ".gpg"


def backup_passphrase(sources: dict[str, str], sources_open: dict) -> str | None:
    """The backup_encryption_key in the (never encrypted) site config part, when any part is encrypted."""
    if not any(is_encrypted_name(path) for path in sources.values()) or "site_config" not in sources_open:
        return None
    fd, st = sources_open["site_config"]
    try:
        doc = json.loads(os.pread(fd, min(st.st_size, _MAX_CONFIG), 0))
    except (ValueError, UnicodeDecodeError):
        return None
    key = doc.get("backup_encryption_key") if isinstance(doc, dict) else None
    return key if isinstance(key, str) and key else None


class GpgCheck:
    """A ``gpg --symmetric`` part decrypted in a stream; the plaintext is checked by ``inner``."""

    def __init__(self, inner, passphrase: str):
        self._inner = inner
        gpg = resolve_binary("gpg")
        if gpg is None:
            raise CheckFailed("is encrypted and gpg was not found; install gnupg to verify encrypted backups")
        # A private, throwaway home: symmetric decryption needs no keyring, only a writable dir.
        self._home = tempfile.mkdtemp(prefix="fmappliance-gpg-")
        try:
            self._filter = StreamFilter(
                lambda fd: [
                    gpg,
                    "--homedir",
                    self._home,
                    "--batch",
                    "--no-tty",
                    "--quiet",
                    "--pinentry-mode",
                    "loopback",
                    "--passphrase-fd",
                    str(fd),
                    "--decrypt",
                ],
                inner.feed,
                secret=passphrase,
            )
        except RuntimeError as exc:
            shutil.rmtree(self._home, ignore_errors=True)
            raise CheckFailed(f"could not be decrypted: {exc}") from None

    def feed(self, data) -> None:
        error = self._filter.failed
        if error is not None:
            self._abort()
            raise error
        self._filter.feed(data)

    def _abort(self) -> None:
        self._filter.abort()
        shutil.rmtree(self._home, ignore_errors=True)

    def finish(self) -> str:
        try:
            code, stderr = self._filter.finish()
        except BaseException:
            self._abort()
            raise
        shutil.rmtree(self._home, ignore_errors=True)
        if code != 0:
            last = next((line for line in reversed(stderr.splitlines()) if line.strip()), "")
            raise CheckFailed(
                "could not be decrypted with the site's backup_encryption_key"
                + (f" (gpg: {last.strip()[:200]})" if last else "")
            )
        return "decrypted, " + self._inner.finish()
