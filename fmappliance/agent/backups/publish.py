"""The copy-and-publish pipeline: copy each part to a temp name while hashing and checking it,
then rename every part to its final name and write the manifest last.

``bench --site S backup`` writes straight to its final names through a shell pipe, so a crash
leaves a truncated file that looks finished (docs/doubles.md).  Nothing bench produced is trusted:
each part is copied to a dot-prefixed temp name beside its final place while it is hashed and
checked in the same read (verify.py), fsynced, and only when every part passed are the temps
renamed, the directory fsynced and the manifest written last.  A backup exists exactly when its
manifest does.

The copy reads into reused buffers and writes in the calling thread, with sha256 in one thread and
the content check in another.  hashlib, zlib and file I/O release the GIL on large buffers, so the
three overlap on two cores and the file is read once instead of three times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import secrets
import stat
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from fmappliance import wire
from fmappliance.agent.backups.bench_names import is_encrypted_name
from fmappliance.agent.backups.encrypted import encrypted_checker
from fmappliance.agent.backups.errors import BackupError
from fmappliance.agent.backups.layout import ID_FORMAT, LABELS, PARTS, READ_FLAGS, human_size
from fmappliance.agent.backups.sources import open_file_beneath
from fmappliance.agent.backups.verify import CheckFailed, plain_checker
from fmappliance.wire import format_timestamp

log = logging.getLogger(__name__)

# A few big reused buffers; each goes back to the reader once both the hasher and the checker are
# done with it.  4 MiB chunks keep syscall and thread hand-off costs negligible.
_CHUNK = 4 << 20
_BUFFERS = 4

SourceFiles = dict[str, tuple[int, os.stat_result]]


def open_sources(sources: dict[str, str], root: str | None = None) -> SourceFiles:
    """part -> (fd, stat) of each file bench produced, refusing anything but a regular file.

    With ``root``, every directory between it and a file is opened without following a link
    (sources.py): the directories a container can write are never trusted to lead where they say.
    """
    opened: SourceFiles = {}
    try:
        for part in PARTS:
            if part not in sources:
                continue
            path = sources[part]
            label = LABELS[part]
            try:
                # O_NONBLOCK: a FIFO planted in place of a backup must not hang the job.
                if root is None:
                    fd = os.open(path, READ_FLAGS | os.O_NONBLOCK)
                else:
                    fd = open_file_beneath(root, path, READ_FLAGS | os.O_NONBLOCK)
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


def publish_into(
    dir_fd: int,
    stack: str,
    site: str,
    moment: datetime,
    sources_open: SourceFiles,
    where: str,
    *,
    source_names: dict[str, str] | None = None,
    passphrase: str | None = None,
    label: str = wire.MANUAL,
    apps: list[str] | None = None,
) -> dict:
    """Publish one backup into the (locked) site dir ``dir_fd``; returns its manifest.

    ``source_names`` (part -> bench's file name) tells encrypted ``-enc`` parts apart; ``passphrase``
    opens them.  ``label`` and ``apps`` (None: unknown) go into the manifest.

    On any failure nothing is left under a final name (and no temp), and BackupError says why.
    """
    while _id_taken(dir_fd, moment.strftime(ID_FORMAT)):
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
                check, suffix = checker_for(
                    part, os.pread(src_fd, 2, 0), (source_names or {}).get(part, ""), passphrase
                )
            except CheckFailed as exc:
                raise BackupError(f"{LABELS[part]} {exc}; nothing was published") from None
            final = backup_id + suffix
            temp = f".{final}.tmp-{secrets.token_hex(6)}"
            dst_fd = os.open(
                temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd
            )
            temps.append(temp)
            try:
                os.lseek(src_fd, 0, os.SEEK_SET)
                try:
                    size, sha256 = copy_verified(src_fd, dst_fd, check, st.st_size)
                    detail = check.finish()
                except CheckFailed as exc:
                    raise BackupError(f"{LABELS[part]} {exc}; nothing was published") from None
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
            "created": format_timestamp(moment),
            "verified": True,
            "verification": "; ".join(verification),
            "files": files,
            "label": label,
            "encrypted": any(f["name"].endswith(".gpg") for f in files),
        }
        if apps is not None:
            manifest["apps"] = list(apps)
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
            raise BackupError(
                f"could not write the backup to {where}: {exc.strerror or exc}; nothing was published"
            ) from None
        raise
    log.info("published backup %s of %s on %s (%s)", backup_id, site, stack, human_size(sum(f["size"] for f in files)))
    return manifest


def checker_for(part: str, head: bytes, source_name: str = "", passphrase: str | None = None):
    """The content check and published suffix of one part.

    bench names encrypted parts with ``-enc`` (``…-database-enc.sql.gz``): those are gpg output,
    checked by decrypting them in a stream (encrypted.py) and published with a ``.gpg`` suffix.
    """
    if part != "site_config" and is_encrypted_name(source_name):
        return encrypted_checker(part, source_name, passphrase)
    return plain_checker(part, head)


def _id_taken(dir_fd: int, backup_id: str) -> bool:
    prefix = backup_id + "."
    return any(name.startswith(prefix) for name in os.listdir(dir_fd))


def _write_file_durably(dir_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640, dir_fd=dir_fd)
    try:
        write_all(fd, memoryview(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_verified(src_fd: int, dst_fd: int, check, expected_size: int) -> tuple[int, str]:
    """Copy src to dst, returning (size, sha256 hex); raises CheckFailed from ``check``.

    ``expected_size`` is the size the source had when it was opened (free space was checked for
    it): a source that grows past it or ends short was still being written, and is refused --
    also so that something appending without end cannot fill the backup disk.
    """
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
            total += n
            _check_growth(total, expected_size)
            write_all(dst_fd, view)
            digest.update(view)
            check.feed(view)
    else:
        total = ThreadedCopy(src, dst_fd, [digest.update, check.feed], limit=expected_size).run()
    if total != expected_size:
        raise CheckFailed(_changed_size(expected_size, total))
    return total, digest.hexdigest()


def _changed_size(expected: int, found: int) -> str:
    return (
        f"changed size while it was being copied ({expected} bytes when opened, {found} read); "
        f"something was still writing it"
    )


def _check_growth(total: int, limit: int) -> None:
    if total > limit:
        raise CheckFailed(_changed_size(limit, total))


def write_all(fd: int, view: memoryview) -> None:
    while len(view):
        written = os.write(fd, view)
        view = view[written:]


class ThreadedCopy:
    """Reader/writer in the calling thread, one thread per consumer, a small ring of buffers."""

    def __init__(self, src, dst_fd: int, consumers: list[Callable], *, limit: int):
        self._src = src
        self._limit = limit
        self._dst_fd = dst_fd
        self._consumers = consumers
        self._buffers = [bytearray(_CHUNK) for _ in range(_BUFFERS)]
        self._free: queue.Queue[int] = queue.Queue()
        for index in range(_BUFFERS):
            self._free.put(index)
        self._pending = [0] * _BUFFERS
        self._lock = threading.Lock()
        self._queues: list[queue.Queue[tuple[int, int] | None]] = [queue.Queue() for _ in consumers]
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
                total += n
                _check_growth(total, self._limit)
                write_all(self._dst_fd, memoryview(buf)[:n])
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
