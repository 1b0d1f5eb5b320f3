"""Reading a published backup back for a restore: re-hash while copying, and the dump's ``__Auth`` check."""

from __future__ import annotations

from fmappliance.agent.backups.encrypted import GpgCheck
from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.publish import copy_verified
from fmappliance.agent.backups.verify import CheckFailed, GzipStream


class DumpHasAuthTable:
    """The dump holds frappe's ``__Auth`` table (``bench restore --force`` would not check it).

    mysqldump writes tables in name order, so ``__Auth`` comes early; once it is seen the rest of the
    stream is passed over without inflating it.
    """

    def __init__(self):
        self.found = False
        self._carry = b""
        self._gzip = GzipStream(self._look)

    def _look(self, out: bytes) -> None:
        if not self.found:
            window = self._carry + bytes(out)
            self.found = b"`__Auth`" in window
            self._carry = window[-16:]

    def feed(self, data) -> None:
        if not self.found:
            try:
                self._gzip.feed(data)
            except CheckFailed as exc:
                raise BackupError(f"the database dump {exc}") from None

    def finish(self) -> str:
        if not self.found:
            raise BackupError(
                "the database dump holds no __Auth table, so it is not a complete frappe backup; refusing to restore it"
            )
        return "holds the __Auth table"


def decrypting(check, passphrase: str):
    """``check`` fed with the plaintext of a gpg-encrypted stream."""
    try:
        return GpgCheck(check, passphrase)
    except CheckFailed as exc:
        raise BackupError(f"the encrypted part {exc}") from None


class _Nothing:
    def feed(self, data) -> None:
        pass


def copy_hashed(src_fd: int, dst_fd: int, expected_size: int, check=None) -> tuple[int, str]:
    """Copy src to dst in one read, returning (size, sha256 hex); ``check`` (feed/finish) sees the bytes too."""
    try:
        size, digest = copy_verified(src_fd, dst_fd, check or _Nothing(), expected_size)
        if check is not None:
            check.finish()
        return size, digest
    except CheckFailed as exc:
        raise BackupError(f"the part {exc}") from None
