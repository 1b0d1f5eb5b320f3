"""Verified backup publication, retention and safe access to published files (issue 2 §4).

``bench --site S backup`` writes straight to its final names through a shell pipe, so a crash
leaves a truncated file that looks finished (../shared/docs/frappe-manager.md §3).  Nothing bench
produced is trusted: each part is copied to a dot-prefixed temp name beside its final place while
it is hashed and checked in the same read (gzip stream complete and the dump ending with
``-- Dump completed``, tar readable to its end marker, site config a JSON object), fsynced, and only
when every part passed are the temps renamed, the directory fsynced and the manifest written
last.  A backup exists exactly when its manifest does.

Layout: ``<base_path>/<stack>/<site>/<YYYY-MM-DD_HH-MM-SS>.<part suffix>`` plus ``<id>.json``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import shutil
import stat
import tarfile
import threading
import time
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import BinaryIO, Callable, Iterator

from fmappliance import names

log = logging.getLogger(__name__)

PARTS = ("database", "files", "private-files", "site_config")
#: Why a backup was taken: manual and scheduled come with backup_site; the agent sets the others.
LABELS = ("manual", "scheduled", "pre-restore", "pre-update", "imported")
ID_FORMAT = "%Y-%m-%d_%H-%M-%S"

_LABELS = {
    "database": "the database dump",
    "files": "the public files archive",
    "private-files": "the private files archive",
    "site_config": "the site config",
}
_ID = re.compile(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", re.ASCII)
_MANIFEST = re.compile(r"(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})\.json", re.ASCII)
# Temp names are ".<final name>.tmp-<random>"; clean_temp_files removes exactly these.
_TEMP = re.compile(r"\.[^/]+\.tmp-[0-9a-f]+", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_LOCK_NAME = ".lock"

# Copy pipeline: a few big reused buffers; each goes back to the reader once both the hasher and
# the checker are done with it.  4 MiB chunks keep syscall and thread hand-off costs negligible.
_CHUNK = 4 << 20
_BUFFERS = 4
# Compressed input is fed to zlib in slices so that one call's output stays bounded
# (a 4 MiB slice of a highly compressible dump could inflate to gigabytes).
_INFLATE_SLICE = 64 << 10
_INFLATE_MAX_OUT = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_DUMP_TRAILER = b"-- Dump completed"
_TAIL_KEEP = 8192  # mysqldump's last line is "-- Dump completed on <date>"; a bounded tail is enough
_MAX_JSON = 16 << 20
_MAX_MANIFEST = 1 << 20
_MAX_PAX_HEADER = 1 << 20
_LOCK_WAIT_SECONDS = 30.0

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_NOFOLLOW_DIR = _DIR_FLAGS | os.O_NOFOLLOW
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class BackupError(Exception):
    """Operator message: why a backup could not be published (verification failure etc.)."""


class BackupNotFound(Exception):
    """No such published backup file (or site backup directory): a 404."""


class BadBackupRequest(Exception):
    """A malformed stack, site or file name (traversal, NUL, wrong shape): a 400."""


class _CheckFailed(Exception):
    """A part failed verification; the text completes 'the database dump ...'."""


# --------------------------------------------------------------------------------------------
# Content checks.  Each takes the raw bytes in order through feed() and says in finish() what it
# verified; both run in the checker thread of the copy pipeline.
# --------------------------------------------------------------------------------------------


class _GzipStream:
    """A complete gzip stream (possibly several concatenated members, as `gzip -t` accepts).

    Decompressed data goes to ``sink`` and is not kept.  Trailing zero padding is tolerated, as by
    gzip(1) and Python's gzip module; anything else after the last member is refused.
    """

    def __init__(self, sink: Callable[[bytes], None]):
        self._sink = sink
        self._inflater = None
        self.members = 0
        self._padding = False

    def feed(self, data) -> None:
        view = memoryview(data)
        for start in range(0, len(view), _INFLATE_SLICE):
            self._feed_slice(view[start:start + _INFLATE_SLICE])

    def _feed_slice(self, data) -> None:
        while len(data):
            if self._inflater is None:
                if self.members:
                    rest = bytes(data).lstrip(b"\0")
                    if len(rest) < len(data):
                        self._padding = True
                    if not rest:
                        return
                    if self._padding:
                        raise _CheckFailed("has unexpected data after the end of its gzip stream")
                    data = rest
                head = bytes(data[:2])
                if head != _GZIP_MAGIC[:len(head)]:
                    if self.members:
                        raise _CheckFailed("has unexpected data after the end of its gzip stream")
                    raise _CheckFailed("is not a gzip file")
                self._inflater = zlib.decompressobj(31)
            try:
                out = self._inflater.decompress(data, _INFLATE_MAX_OUT)
                if out:
                    self._sink(out)
                # A full output buffer may leave input unconsumed or output pending inside zlib.  Once the
                # member has ended, the rest is in unused_data (CPython may leave a stale unconsumed_tail).
                while not self._inflater.eof and (self._inflater.unconsumed_tail or len(out) == _INFLATE_MAX_OUT):
                    out = self._inflater.decompress(self._inflater.unconsumed_tail, _INFLATE_MAX_OUT)
                    if out:
                        self._sink(out)
            except zlib.error as exc:
                raise _CheckFailed(f"is corrupt: the gzip data does not decompress ({exc})") from None
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None
                self.members += 1
            else:
                return

    def finish(self) -> None:
        if self._inflater is not None:
            raise _CheckFailed("is truncated: gzip stream ended early")
        if not self.members:
            raise _CheckFailed("is empty")


class _DumpCheck:
    """A gzip-compressed SQL dump that mysqldump finished (its last line is '-- Dump completed ...')."""

    def __init__(self):
        self._tail = b""
        self._gzip = _GzipStream(self._keep_tail)

    def _keep_tail(self, out: bytes) -> None:
        if len(out) >= _TAIL_KEEP:
            self._tail = out[-_TAIL_KEEP:]
        else:
            self._tail = (self._tail + out)[-_TAIL_KEEP:]

    def feed(self, data) -> None:
        self._gzip.feed(data)

    def finish(self) -> str:
        self._gzip.finish()
        if _DUMP_TRAILER not in self._tail:
            raise _CheckFailed(
                "is incomplete: it does not end with '-- Dump completed' (mysqldump stopped before the end)"
            )
        members = "" if self._gzip.members == 1 else f" ({self._gzip.members} members)"
        return f"gzip stream complete{members}, ends with '-- Dump completed'"


class _TarCheck:
    """A tar archive readable to its end-of-archive marker.

    tarfile.open() in stream mode treats a corrupt header or a cut at an entry boundary as the end of
    the archive and reports success, so entries are walked here with tarfile's own header parser
    (checksums, sizes in octal or base-256) and the zero end block is required.
    """

    _NO_DATA = (tarfile.LNKTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE)

    def __init__(self):
        self._header = bytearray()
        self._skip = 0  # bytes of entry data (plus padding) still to pass over
        self._pax = None  # collected pax extended header data, to learn a size override
        self._pax_size = None
        self._pax_length = 0
        self._sparse_ext = False  # GNU sparse extension blocks follow
        self._offset = 0
        self._ended = False
        self.entries = 0

    def feed(self, data) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self._ended:
                # After the end marker only zero padding (to the record size) may follow; anything else
                # means a zeroed header hid the rest of the archive.
                if bytes(view[pos:]).count(0) != end - pos:
                    raise _CheckFailed("is corrupt: non-zero data after an all-zero header block")
                self._offset += end - pos
                return
            if self._skip and not self._sparse_ext:
                take = min(self._skip, end - pos)
                if self._pax is not None:
                    self._pax += view[pos:pos + take]
                self._skip -= take
                pos += take
                self._offset += take
                if not self._skip and self._pax is not None:
                    self._pax_size = _pax_size(bytes(self._pax[:self._pax_length]))
                    self._pax = None
                continue
            take = min(tarfile.BLOCKSIZE - len(self._header), end - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == tarfile.BLOCKSIZE:
                block = bytes(self._header)
                self._header.clear()
                self._block(block)
                self._offset += tarfile.BLOCKSIZE

    def _block(self, block: bytes) -> None:
        if self._sparse_ext:  # GNU sparse extension blocks sit between the header and the data
            self._sparse_ext = bool(block[504])
            return
        if block == tarfile.NUL * tarfile.BLOCKSIZE:
            self._ended = True
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as exc:
            raise _CheckFailed(f"is corrupt: bad tar header at byte {self._offset} ({exc})") from None
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            if size > _MAX_PAX_HEADER:
                raise _CheckFailed(f"is corrupt: implausible {size}-byte pax header at byte {self._offset}")
            self._pax = bytearray()
            self._pax_length = size  # the data; the rest of the last block is padding
        elif info.type not in (tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if self._pax_size is not None:
                size, self._pax_size = self._pax_size, None
            if info.type in self._NO_DATA:
                size = 0
            if info.type == tarfile.GNUTYPE_SPARSE:
                self._sparse_ext = bool(block[482])
            self.entries += 1
        self._skip = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        if not self._skip and self._pax is not None:
            self._pax = None

    def finish(self) -> str:
        if self._header or self._skip or self._sparse_ext:
            raise _CheckFailed(f"is truncated: it ends in the middle of an entry (after {self._offset} bytes)")
        if not self._ended:
            if not self._offset:
                raise _CheckFailed("is empty")
            raise _CheckFailed("is truncated: it ends without the tar end-of-archive marker")
        return f"tar readable to the end ({self.entries} entries)"


def _pax_size(data: bytes) -> int | None:
    """The 'size' record of a pax extended header, if any (it overrides the next header's size)."""
    size = None
    pos = 0
    while pos < len(data):
        match = re.match(rb"(\d+) ", data[pos:pos + 24])
        if not match or int(match.group(1)) <= 0:
            raise _CheckFailed("is corrupt: malformed pax extended header")
        length = int(match.group(1))
        record = data[pos + match.end():pos + length]
        key, _, value = record.rstrip(b"\n").partition(b"=")
        if key == b"size":
            if not value.isdigit():
                raise _CheckFailed("is corrupt: malformed pax size record")
            size = int(value)
        pos += length
    return size


class _TgzCheck:
    """A gzip-compressed tar (bench --compress writes .tgz)."""

    def __init__(self):
        self._tar = _TarCheck()
        self._gzip = _GzipStream(self._tar.feed)

    def feed(self, data) -> None:
        self._gzip.feed(data)

    def finish(self) -> str:
        self._gzip.finish()
        return "gzip stream complete, " + self._tar.finish()


class _JsonObjectCheck:
    """site_config.json: a JSON object."""

    def __init__(self):
        self._data = bytearray()

    def feed(self, data) -> None:
        if len(self._data) + len(data) > _MAX_JSON:
            raise _CheckFailed(f"is implausibly large for a site config (over {_MAX_JSON >> 20} MiB)")
        self._data += data

    def finish(self) -> str:
        try:
            doc = json.loads(bytes(self._data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _CheckFailed(f"is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise _CheckFailed("is not a JSON object")
        return "valid JSON object"


# --------------------------------------------------------------------------------------------
# The copy pipeline: read into reused buffers and write in this thread, sha256 in one thread,
# content check in another.  hashlib, zlib and file I/O release the GIL on large buffers, so the
# three overlap on two cores and the file is read once instead of three times.
# --------------------------------------------------------------------------------------------


def _copy_verified(src_fd: int, dst_fd: int, check, expected_size: int) -> tuple[int, str]:
    """Copy src to dst, returning (size, sha256 hex); raises _CheckFailed from ``check``."""
    digest = hashlib.sha256()
    src = open(src_fd, "rb", buffering=0, closefd=False)
    if expected_size <= _CHUNK:
        # Small parts (site config, a small site's files): one pass, no threads.
        total = 0
        buf = bytearray(max(expected_size + 1, 64 << 10))
        while True:
            n = src.readinto(buf)
            if not n:
                break
            view = memoryview(buf)[:n]
            _write_all(dst_fd, view)
            digest.update(view)
            check.feed(view)
            total += n
        return total, digest.hexdigest()
    return _ThreadedCopy(src, dst_fd, [digest.update, check.feed]).run(), digest.hexdigest()


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        written = os.write(fd, view)
        view = view[written:]


class _ThreadedCopy:
    """Reader/writer in the calling thread, one thread per consumer, a small ring of buffers."""

    def __init__(self, src, dst_fd: int, consumers: list[Callable]):
        self._src = src
        self._dst_fd = dst_fd
        self._consumers = consumers
        self._buffers = [bytearray(_CHUNK) for _ in range(_BUFFERS)]
        self._free: queue.Queue[int] = queue.Queue()
        for index in range(_BUFFERS):
            self._free.put(index)
        self._pending = [0] * _BUFFERS
        self._lock = threading.Lock()
        self._queues = [queue.Queue() for _ in consumers]
        self._error: BaseException | None = None

    def _release(self, index: int) -> None:
        with self._lock:
            self._pending[index] -= 1
            done = self._pending[index] == 0
        if done:
            self._free.put(index)

    def _consume(self, consumer: Callable, work: queue.Queue) -> None:
        while True:
            item = work.get()
            if item is None:
                return
            index, size = item
            try:
                if self._error is None:
                    consumer(memoryview(self._buffers[index])[:size])
            except BaseException as exc:  # handed to the reader thread, which re-raises it
                self._error = exc
            finally:
                self._release(index)

    def run(self) -> int:
        threads = [
            threading.Thread(target=self._consume, args=(consumer, work), name="backup-copy", daemon=True)
            for consumer, work in zip(self._consumers, self._queues)
        ]
        for thread in threads:
            thread.start()
        total = 0
        try:
            while self._error is None:
                index = self._free.get()
                buf = self._buffers[index]
                n = self._src.readinto(buf)
                if not n:
                    self._free.put(index)
                    break
                _write_all(self._dst_fd, memoryview(buf)[:n])
                total += n
                self._pending[index] = len(self._queues)
                for work in self._queues:
                    work.put((index, n))
        finally:
            for work in self._queues:
                work.put(None)
            for thread in threads:
                thread.join()
        if self._error is not None:
            raise self._error
        return total


class DumpHasAuthTable:
    """Restore preflight: the dump holds frappe's ``__Auth`` table (bench restore --force would not check).

    mysqldump writes tables in name order, so ``__Auth`` comes early; once it is seen the rest of the
    stream is passed over without inflating it.
    """

    def __init__(self):
        self.found = False
        self._carry = b""
        self._gzip = _GzipStream(self._look)

    def _look(self, out: bytes) -> None:
        if not self.found:
            window = self._carry + bytes(out)
            self.found = b"`__Auth`" in window
            self._carry = window[-16:]

    def feed(self, data) -> None:
        if not self.found:
            try:
                self._gzip.feed(data)
            except _CheckFailed as exc:
                raise BackupError(f"the database dump {exc}") from None

    def finish(self) -> str:
        if not self.found:
            raise BackupError("the database dump holds no __Auth table, so it is not a complete frappe backup; "
                              "refusing to restore it")
        return "holds the __Auth table"


def decrypting(check, passphrase: str):
    """``check`` fed with the plaintext of a gpg-encrypted stream (for restore preflight)."""
    try:
        return _GpgCheck(check, passphrase)
    except _CheckFailed as exc:
        raise BackupError(f"the encrypted part {exc}") from None


def copy_hashed(src_fd: int, dst_fd: int, expected_size: int, check=None) -> tuple[int, str]:
    """Copy src to dst in one read, returning (size, sha256 hex); ``check`` (feed/finish) sees the bytes too."""

    class _Nothing:
        def feed(self, data) -> None:
            pass

    try:
        size, digest = _copy_verified(src_fd, dst_fd, check or _Nothing(), expected_size)
        if check is not None:
            check.finish()
        return size, digest
    except _CheckFailed as exc:
        raise BackupError(f"the part {exc}") from None


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_id(backup_id: str) -> datetime:
    return datetime.strptime(backup_id, ID_FORMAT).replace(tzinfo=timezone.utc)


def _human_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)  # pragma: no cover


def _checker_for(part: str, head: bytes, source_name: str = "", passphrase: str | None = None):
    """The content check and published suffix of one part (tars by content: gzip magic means .tgz).

    bench names encrypted parts with ``-enc`` (``…-database-enc.sql.gz``); those are gpg output,
    checked by decrypting them in a stream, and published with a ``.gpg`` suffix.
    """
    if part != "site_config" and is_encrypted_name(source_name):
        if passphrase is None:
            raise _CheckFailed("is encrypted but the site config backup holds no backup_encryption_key to open it")
        inner = _DumpCheck() if part == "database" else _TarOrTgzCheck()
        ext = ".sql.gz" if part == "database" else (f".{part}.tgz" if source_name.endswith(".tgz") else f".{part}.tar")
        return _GpgCheck(inner, passphrase), ext + ".gpg"
    if part == "database":
        return _DumpCheck(), ".sql.gz"
    if part == "site_config":
        return _JsonObjectCheck(), ".site_config.json"
    if head[:2] == b"\x1f\x8b":
        return _TgzCheck(), f".{part}.tgz"
    return _TarCheck(), f".{part}.tar"


def is_encrypted_name(name: str) -> bool:
    """bench's name for a part of an encrypted backup: ``…-database-enc.sql.gz``, ``…-files-enc.tar``."""
    return bool(re.search(r"-enc\.(sql\.gz|tar|tgz|json)$", os.path.basename(name)))


class _TarOrTgzCheck:
    """A files archive whose compression is only known once its first bytes are seen (after decryption)."""

    def __init__(self):
        self._check = None

    def feed(self, data) -> None:
        if self._check is None:
            self._check = _TgzCheck() if bytes(data[:2]) == _GZIP_MAGIC else _TarCheck()
        self._check.feed(data)

    def finish(self) -> str:
        if self._check is None:
            raise _CheckFailed("is empty")
        return self._check.finish()


class _GpgCheck:
    """A ``gpg --symmetric`` part, decrypted in a stream (passphrase through a pipe, never in an argv);
    the plaintext is checked by ``inner`` and not kept."""

    def __init__(self, inner, passphrase: str):
        import tempfile

        from fmappliance.agent.runner import StreamFilter, resolve_binary

        self._inner = inner
        gpg = resolve_binary("gpg")
        if gpg is None:
            raise _CheckFailed("is encrypted and gpg was not found; install gnupg to verify encrypted backups")
        self._home = tempfile.mkdtemp(prefix="fmappliance-gpg-")
        try:
            self._filter = StreamFilter(
                lambda fd: [gpg, "--homedir", self._home, "--batch", "--no-tty", "--quiet", "--pinentry-mode",
                            "loopback", "--passphrase-fd", str(fd), "--decrypt"],
                inner.feed, secret=passphrase)
        except RuntimeError as exc:
            shutil.rmtree(self._home, ignore_errors=True)
            raise _CheckFailed(f"could not be decrypted: {exc}") from None

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
            raise _CheckFailed("could not be decrypted with the site's backup_encryption_key"
                               + (f" (gpg: {last.strip()[:200]})" if last else ""))
        return "decrypted, " + self._inner.finish()


class BackupStore:
    """Published backups under ``base_path``: publish (verified), retention, listing, safe open."""

    def __init__(self, base_path: str, retention: dict, *, lock_wait_seconds: float = _LOCK_WAIT_SECONDS):
        self.base_path = os.path.abspath(base_path)
        self.retention = {tier: int(retention.get(tier, 0)) for tier in ("daily", "weekly", "monthly")}
        self.lock_wait_seconds = lock_wait_seconds

    # ---- directories and locks -------------------------------------------------------------

    def _site_path(self, stack: str, site: str) -> str:
        return os.path.join(self.base_path, stack, site)

    @staticmethod
    def _check_names(stack: str, site: str) -> None:
        if not names.is_valid_stack_name(stack):
            raise BadBackupRequest(f"{stack!r} is not a valid stack name ({names.STACK_NAME_RULE}).")
        if not names.is_valid_site_name(site):
            raise BadBackupRequest(f"{site!r} is not a valid site name ({names.SITE_NAME_RULE}).")

    def _open_site_dir(self, stack: str, site: str, *, create: bool = False) -> int:
        """An fd of <base>/<stack>/<site>, reached without following a symlink below base_path.

        base_path itself may be a symlink (the operator's choice); a stack or site directory that is
        a symlink is refused, so a published name can never resolve outside its own directory.
        """
        self._check_names(stack, site)
        if create:
            self._make_dir(self.base_path)
        try:
            fd = os.open(self.base_path, _DIR_FLAGS)
        except FileNotFoundError:
            raise BackupNotFound(f"No backups of {site} on {stack} yet.") from None
        try:
            for name in (stack, site):
                try:
                    child = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise BackupNotFound(f"No backups of {site} on {stack} yet.") from None
                    try:
                        os.mkdir(name, 0o750, dir_fd=fd)
                    except FileExistsError:
                        pass
                    child = os.open(name, _NOFOLLOW_DIR, dir_fd=fd)
                    os.fchmod(child, 0o750)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise BackupNotFound(
                            f"The backup directory of {site} on {stack} is not a plain directory "
                            f"(a symlink or a file); refusing to use it."
                        ) from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _make_dir(path: str) -> None:
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            BackupStore._make_dir(parent)
        try:
            os.mkdir(path, 0o750)
        except FileExistsError:
            return
        os.chmod(path, 0o750)

    @contextmanager
    def _locked(self, dir_fd: int, what: str, *, wait: float | None = None) -> Iterator[None]:
        """flock on <site dir>/.lock: one publish or retention pass per site at a time (released on crash)."""
        wait = self.lock_wait_seconds if wait is None else wait
        try:
            lock_fd = os.open(_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
        except OSError as exc:
            raise BackupError(f"cannot open the lock file of {what}: {exc.strerror}") from None
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BackupError(
                            f"another backup or clean-up of {what} is still running; try again when it has finished"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(lock_fd)

    # ---- start-up clean-up -----------------------------------------------------------------

    def clean_temp_files(self) -> int:
        """Remove temp files a killed publish left behind; returns how many were removed."""
        removed = 0
        for stack_entry in _scandir_dirs(self.base_path):
            for site_entry in _scandir_dirs(stack_entry.path):
                if not (names.is_valid_stack_name(stack_entry.name) and names.is_valid_site_name(site_entry.name)):
                    continue
                try:
                    fd = self._open_site_dir(stack_entry.name, site_entry.name)
                except (BackupNotFound, OSError):
                    continue
                try:
                    with self._locked(fd, f"{site_entry.name} on {stack_entry.name}", wait=0):
                        for name in os.listdir(fd):
                            if _TEMP.fullmatch(name) and _is_plain_file(fd, name):
                                os.unlink(name, dir_fd=fd)
                                removed += 1
                                log.info("removed leftover temp file %s", os.path.join(site_entry.path, name))
                except BackupError as exc:
                    log.info("skipped temp clean-up in %s: %s", site_entry.path, exc)
                except OSError as exc:
                    log.warning("could not clean temp files in %s: %s", site_entry.path, exc.strerror)
                finally:
                    os.close(fd)
        return removed

    # ---- publish ---------------------------------------------------------------------------

    def publish(self, stack: str, site: str, sources: dict[str, str], *, created: datetime | None = None,
                label: str = "manual", apps: list[str] | None = None) -> dict:
        """Copy, verify and atomically publish one backup; returns its manifest.

        ``label`` (one of LABELS) and ``apps`` (what `bench list-apps` said, or None when unknown) go
        into the manifest.  On any failure nothing is left under a final name (and no temp), and
        BackupError says why.
        """
        if label not in LABELS:
            raise ValueError(f"unknown backup label {label!r}")
        unknown = set(sources) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown backup parts: {sorted(unknown)}")
        if "database" not in sources:
            raise BackupError(f"bench produced no database dump for {site}; nothing was published")
        self._check_names(stack, site)
        moment = _utc(created)
        sources_open = self._open_sources(sources)
        try:
            self._check_free_space(sum(st.st_size for _fd, st in sources_open.values()))
            try:
                dir_fd = self._open_site_dir(stack, site, create=True)
            except BackupNotFound as exc:
                raise BackupError(str(exc)) from None
            except OSError as exc:
                raise BackupError(f"cannot create the backup directory {self._site_path(stack, site)}: {exc.strerror}") from None
            try:
                passphrase = _backup_passphrase(sources, sources_open)
                with self._locked(dir_fd, f"{site} on {stack}"):
                    manifest = self._publish_locked(dir_fd, stack, site, moment, sources_open,
                                                    names={p: os.path.basename(v) for p, v in sources.items()},
                                                    passphrase=passphrase, extra={"label": label, "apps": apps})
                    return manifest
            finally:
                os.close(dir_fd)
        finally:
            for fd, _st in sources_open.values():
                os.close(fd)

    def _open_sources(self, sources: dict[str, str]) -> dict[str, tuple[int, os.stat_result]]:
        opened: dict[str, tuple[int, os.stat_result]] = {}
        try:
            for part in PARTS:
                if part not in sources:
                    continue
                path = sources[part]
                label = _LABELS[part]
                try:
                    # O_NONBLOCK: a FIFO planted in place of a backup must not hang the job.
                    fd = os.open(path, _READ_FLAGS | os.O_NONBLOCK)
                except FileNotFoundError:
                    raise BackupError(f"{label} that bench reported is missing: {path}") from None
                except OSError as exc:
                    raise BackupError(f"cannot read {label} {path}: {exc.strerror}") from None
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    os.close(fd)
                    raise BackupError(f"{label} {path} is not a regular file; refusing to publish it")
                os.set_blocking(fd, True)
                opened[part] = (fd, st)
        except BaseException:
            for fd, _st in opened.values():
                os.close(fd)
            raise
        return opened

    def _check_free_space(self, needed: int) -> None:
        usage = self.disk_usage()
        if usage["free_bytes"] < needed:
            raise BackupError(
                f"not enough free space in {usage['path']}: the backup needs {_human_size(needed)}, "
                f"{_human_size(usage['free_bytes'])} are free; free some space or lower the retention"
            )

    def _publish_locked(self, dir_fd, stack, site, moment, sources_open, *, names=None, passphrase=None,
                        extra=None) -> dict:
        while self._id_taken(dir_fd, moment.strftime(ID_FORMAT)):
            moment += timedelta(seconds=1)
        backup_id = moment.strftime(ID_FORMAT)
        temps: list[str] = []
        finals: list[str] = []
        files, verification = [], []
        try:
            staged = []
            for part in PARTS:
                if part not in sources_open:
                    continue
                src_fd, st = sources_open[part]
                try:
                    check, suffix = _checker_for(part, os.pread(src_fd, 2, 0), (names or {}).get(part, ""), passphrase)
                except _CheckFailed as exc:
                    raise BackupError(f"{_LABELS[part]} {exc}; nothing was published") from None
                final = backup_id + suffix
                temp = f".{final}.tmp-{secrets.token_hex(6)}"
                dst_fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
                temps.append(temp)
                try:
                    os.lseek(src_fd, 0, os.SEEK_SET)
                    try:
                        size, sha256 = _copy_verified(src_fd, dst_fd, check, st.st_size)
                        detail = check.finish()
                    except _CheckFailed as exc:
                        raise BackupError(f"{_LABELS[part]} {exc}; nothing was published") from None
                    os.fsync(dst_fd)
                finally:
                    os.close(dst_fd)
                staged.append((temp, final))
                files.append({"name": final, "part": part, "size": size, "sha256": sha256})
                verification.append(f"{part}: {detail}")
            # Every part verified: only now do final names appear.
            for temp, final in staged:
                os.rename(temp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                temps.remove(temp)
                finals.append(final)
            os.fsync(dir_fd)
            manifest = {
                "id": backup_id,
                "stack": stack,
                "site": site,
                "created": _iso(moment),
                "verified": True,
                "verification": "; ".join(verification),
                "files": files,
                "label": (extra or {}).get("label", "manual"),
                "encrypted": any(f["name"].endswith(".gpg") for f in files),
            }
            if (extra or {}).get("apps") is not None:
                manifest["apps"] = list(extra["apps"])
            manifest_name = backup_id + ".json"
            temp = f".{manifest_name}.tmp-{secrets.token_hex(6)}"
            temps.append(temp)
            _write_file_durably(dir_fd, temp, (json.dumps(manifest, indent=2) + "\n").encode())
            os.rename(temp, manifest_name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            temps.remove(temp)
            os.fsync(dir_fd)
        except BaseException as exc:
            for name in temps + finals:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except OSError:
                    log.exception("could not remove %s after a failed publish", name)
            if isinstance(exc, OSError):
                where = self._site_path(stack, site)
                raise BackupError(f"could not write the backup to {where}: {exc.strerror or exc}; nothing was published") from None
            raise
        log.info("published backup %s of %s on %s (%s)", backup_id, site, stack,
                 _human_size(sum(f["size"] for f in files)))
        return manifest

    @staticmethod
    def _id_taken(dir_fd: int, backup_id: str) -> bool:
        prefix = backup_id + "."
        return any(name.startswith(prefix) for name in os.listdir(dir_fd))

    # ---- manifests -------------------------------------------------------------------------

    def _manifests(self, dir_fd: int, stack: str, site: str) -> list[dict]:
        """Every well-formed manifest in a site dir, newest first (broken ones are logged and skipped)."""
        found = []
        for backup_id in _manifest_ids(dir_fd):
            manifest = _load_manifest(dir_fd, backup_id, stack, site)
            if manifest is not None:
                found.append(manifest)
        return found

    def list_backups(self, stack: str, site: str) -> list[dict]:
        """Published backups of a site, newest first, in the API's shape."""
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return []
        try:
            return [_summary(m, with_files=True) for m in self._manifests(dir_fd, stack, site)]
        finally:
            os.close(dir_fd)

    def get_manifest(self, stack: str, site: str, backup_id: str) -> dict | None:
        """The manifest of one published backup, or None when there is no such (well-formed) backup."""
        if not isinstance(backup_id, str) or not _ID.fullmatch(backup_id):
            return None
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return None
        try:
            return _load_manifest(dir_fd, backup_id, stack, site)
        finally:
            os.close(dir_fd)

    def last_backup(self, stack: str, site: str) -> dict | None:
        """{"id", "created", "size", "verified"} of the newest backup, or None (reads one manifest)."""
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return None
        try:
            for backup_id in _manifest_ids(dir_fd):
                manifest = _load_manifest(dir_fd, backup_id, stack, site)
                if manifest is not None:
                    return _summary(manifest, with_files=False)
            return None
        finally:
            os.close(dir_fd)

    # ---- retention -------------------------------------------------------------------------

    def apply_retention(self, stack: str, site: str, *, now: datetime | None = None) -> list[str]:
        """Delete verified backups that no daily/weekly/monthly slot keeps; returns the deleted ids.

        Only backups with a verified manifest stamped up to ``now`` are counted or deleted (a clock that
        went backwards must not cost backups); the newest of them is always kept.  Files without a
        manifest are never touched.  Call it only after a verified publish.
        """
        now = _utc(now)
        try:
            dir_fd = self._open_site_dir(stack, site)
        except BackupNotFound:
            return []
        deleted = []
        try:
            with self._locked(dir_fd, f"{site} on {stack}"):
                # Backups stamped after `now` (the clock went backwards) are left alone and take no slot.
                candidates = [
                    m for m in self._manifests(dir_fd, stack, site)
                    if m["verified"] is True and _parse_id(m["id"]) <= now
                ]
                keep = gfs_keep([m["id"] for m in candidates], self.retention)
                for manifest in candidates:
                    if manifest["id"] in keep:
                        continue
                    for entry in manifest["files"]:
                        try:
                            os.unlink(entry["name"], dir_fd=dir_fd)
                        except FileNotFoundError:
                            pass
                    os.unlink(manifest["id"] + ".json", dir_fd=dir_fd)
                    deleted.append(manifest["id"])
                if deleted:
                    os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if deleted:
            log.info("retention removed %d backup(s) of %s on %s: %s", len(deleted), site, stack, ", ".join(deleted))
        return deleted

    # ---- downloads -------------------------------------------------------------------------

    def open_published_file(self, stack: str, site: str, name: str) -> tuple[BinaryIO, os.stat_result]:
        """Open a file listed in a manifest of this stack/site (or the manifest itself) for reading.

        Refuses (before reading a byte) anything that is not a plain, singly linked regular file directly
        in the site's own backup directory.
        """
        self._check_names(stack, site)
        if not names.is_valid_backup_file_name(name):
            raise BadBackupRequest(f"{name!r} is not a backup file name (expected <YYYY-MM-DD_HH-MM-SS>.<part>).")
        missing = BackupNotFound(f"No backup file {name} for {site} on {stack}.")
        expected_dir = os.path.join(os.path.realpath(self.base_path), stack, site)
        if os.path.realpath(self._site_path(stack, site)) != expected_dir \
                or os.path.commonpath([expected_dir, os.path.realpath(os.path.join(expected_dir, name))]) != expected_dir:
            raise missing
        dir_fd = self._open_site_dir(stack, site)
        try:
            backup_id = name[:19]
            manifest = _load_manifest(dir_fd, backup_id, stack, site)
            if manifest is None:
                raise missing
            listed = {f["name"]: f["size"] for f in manifest["files"]}
            if name != backup_id + ".json" and name not in listed:
                raise missing
            try:
                fd = os.open(name, _READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError:  # ELOOP: a symlink in its place; ENOENT: deleted by retention
                raise missing from None
        finally:
            os.close(dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise missing
            if name in listed and st.st_size != listed[name]:
                log.warning("published file %s/%s/%s changed size since publication; not serving it", stack, site, name)
                raise missing
            os.set_blocking(fd, True)
            return open(fd, "rb", buffering=0), st
        except BaseException:
            os.close(fd)
            raise

    def disk_usage(self) -> dict:
        """{"path", "free_bytes", "total_bytes"} of base_path's filesystem (or its nearest existing parent)."""
        path = self.base_path
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        usage = shutil.disk_usage(path)
        return {"path": self.base_path, "free_bytes": usage.free, "total_bytes": usage.total}


def gfs_keep(ids: list[str], retention: dict) -> set[str]:
    """Backup ids kept by grandfather-father-son retention (ids are UTC timestamps).

    Per tier, walking newest first, the first backup of each new day / ISO week / month is kept until
    the tier has its count; tiers are independent (a backup may fill several).  The newest is always kept.
    """
    ordered = sorted(ids, reverse=True)
    keep = set(ordered[:1])
    buckets = (
        ("daily", lambda d: d.date()),
        ("weekly", lambda d: d.isocalendar()[:2]),
        ("monthly", lambda d: (d.year, d.month)),
    )
    for tier, bucket_of in buckets:
        wanted = int(retention.get(tier, 0))
        seen = set()
        for backup_id in ordered:
            if len(seen) >= wanted:
                break
            bucket = bucket_of(_parse_id(backup_id))
            if bucket not in seen:
                seen.add(bucket)
                keep.add(backup_id)
    return keep


def _summary(manifest: dict, *, with_files: bool) -> dict:
    """A manifest in the API's shape: with files for listings, without for the status page."""
    size = sum(f["size"] for f in manifest["files"])
    if not with_files:
        return {"id": manifest["id"], "created": manifest["created"], "size": size, "verified": manifest["verified"]}
    return {
        "id": manifest["id"],
        "created": manifest["created"],
        "stack": manifest["stack"],
        "site": manifest["site"],
        "verified": manifest["verified"],
        "size": size,
        "label": manifest_label(manifest),
        "encrypted": manifest.get("encrypted") is True,
        "apps": manifest.get("apps") if isinstance(manifest.get("apps"), list) else None,
        "files": [{k: f[k] for k in ("name", "part", "size", "sha256")} for f in manifest["files"]],
    }


def manifest_label(manifest: dict) -> str:
    """The manifest's label; backups published before labels existed were taken by hand or schedule: manual."""
    label = manifest.get("label")
    return label if label in LABELS else "manual"


def _backup_passphrase(sources: dict[str, str], sources_open: dict) -> str | None:
    """The site's backup_encryption_key from the (never encrypted) site config part, when any part is encrypted."""
    if not any(is_encrypted_name(path) for path in sources.values()) or "site_config" not in sources_open:
        return None
    fd, st = sources_open["site_config"]
    try:
        doc = json.loads(os.pread(fd, min(st.st_size, _MAX_JSON), 0))
    except (ValueError, UnicodeDecodeError):
        return None
    key = doc.get("backup_encryption_key") if isinstance(doc, dict) else None
    return key if isinstance(key, str) and key else None


def _load_manifest(dir_fd: int, backup_id: str, stack: str, site: str) -> dict | None:
    """A manifest that is a plain file with the expected shape, or None (logged)."""
    name = backup_id + ".json"
    try:
        fd = os.open(name, _READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("ignoring manifest %s of %s on %s: %s", name, site, stack, exc.strerror)
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_MANIFEST:
            log.warning("ignoring manifest %s of %s on %s: not a plain file of sane size", name, site, stack)
            return None
        with open(fd, "rb", closefd=False) as handle:
            doc = json.loads(handle.read(_MAX_MANIFEST + 1))
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("ignoring manifest %s of %s on %s: not valid JSON (%s)", name, site, stack, exc)
        return None
    finally:
        os.close(fd)
    problem = _manifest_problem(doc, backup_id, stack, site)
    if problem:
        log.warning("ignoring manifest %s of %s on %s: %s", name, site, stack, problem)
        return None
    return doc


def _manifest_problem(doc, backup_id: str, stack: str, site: str) -> str | None:
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("id") != backup_id or doc.get("stack") != stack or doc.get("site") != site:
        return "id, stack or site do not match its place"
    if not isinstance(doc.get("created"), str) or not isinstance(doc.get("verified"), bool):
        return "missing created/verified"
    files = doc.get("files")
    if not isinstance(files, list) or not files:
        return "no files listed"
    for entry in files:
        if not (
            isinstance(entry, dict)
            and names.is_valid_backup_file_name(entry.get("name"))
            and entry["name"].startswith(backup_id + ".")
            and entry["name"] != backup_id + ".json"
            and entry.get("part") in PARTS
            and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool) and entry["size"] >= 0
            and isinstance(entry.get("sha256"), str) and _SHA256.fullmatch(entry["sha256"])
        ):
            return f"bad file entry {entry!r:.200}"
    return None


def _write_file_durably(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
    try:
        _write_all(fd, memoryview(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_plain_file(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _manifest_ids(dir_fd: int) -> list[str]:
    """Ids of the manifests in a site dir, newest first (ids are timestamps, so they sort as text)."""
    return sorted((m.group(1) for m in map(_MANIFEST.fullmatch, os.listdir(dir_fd)) if m), reverse=True)


def _scandir_dirs(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [e for e in entries if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []
