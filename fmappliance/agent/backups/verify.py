"""Content checks of backup parts: is what bench wrote complete?

Each check takes the raw bytes in order through feed() and says in finish() what it verified; both
run in the checker thread of the copy pipeline, so the file is read once.  A failure raises
CheckFailed with text that completes "the database dump ..." (see layout.LABELS).
"""

from __future__ import annotations

import json
import re
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

# Compressed input is fed to zlib in slices so that one call's output stays bounded
# (a 4 MiB slice of a highly compressible dump could inflate to gigabytes).
INFLATE_SLICE = 64 << 10
INFLATE_MAX_OUT = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_DUMP_TRAILER = b"-- Dump completed"
_TAIL_KEEP = 8192  # mysqldump's last line is "-- Dump completed on <date>"; a bounded tail is enough
_MAX_JSON = 16 << 20
_MAX_PAX_HEADER = 1 << 20


class CheckFailed(Exception):
    """A part failed verification; the text completes 'the database dump ...'."""


class GzipStream:
    """A complete gzip stream (possibly several concatenated members, as `gzip -t` accepts).

    Decompressed data goes to ``sink`` and is not kept.  Trailing zero padding is tolerated, as by
    gzip(1) and Python's gzip module; anything else after the last member is refused.
    """

    def __init__(
        self, sink: Callable[[bytes], None], *, slice_size: int = INFLATE_SLICE, max_out: int = INFLATE_MAX_OUT
    ):
        self._sink = sink
        self._slice = slice_size
        self._max_out = max_out
        self._inflater: Any = None  # a zlib decompress object while inside a member
        self.members = 0
        self._padding = False

    def feed(self, data) -> None:
        view = memoryview(data)
        for start in range(0, len(view), self._slice):
            self._feed_slice(view[start : start + self._slice])

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
                        raise CheckFailed("has unexpected data after the end of its gzip stream")
                    data = rest
                head = bytes(data[:2])
                if head != _GZIP_MAGIC[: len(head)]:
                    if self.members:
                        raise CheckFailed("has unexpected data after the end of its gzip stream")
                    raise CheckFailed("is not a gzip file")
                self._inflater = zlib.decompressobj(31)
            try:
                out = self._inflater.decompress(data, self._max_out)
                if out:
                    self._sink(out)
                # A full output buffer may leave input unconsumed or output pending inside zlib.  Once the
                # member has ended, the rest is in unused_data (CPython may leave a stale unconsumed_tail).
                while not self._inflater.eof and (self._inflater.unconsumed_tail or len(out) == self._max_out):
                    out = self._inflater.decompress(self._inflater.unconsumed_tail, self._max_out)
                    if out:
                        self._sink(out)
            except zlib.error as exc:
                raise CheckFailed(f"is corrupt: the gzip data does not decompress ({exc})") from None
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = None
                self.members += 1
            else:
                return

    def finish(self) -> None:
        if self._inflater is not None:
            raise CheckFailed("is truncated: gzip stream ended early")
        if not self.members:
            raise CheckFailed("is empty")


class DumpCheck:
    """A gzip-compressed SQL dump that mysqldump finished (its last line is '-- Dump completed ...')."""

    def __init__(self):
        self._tail = b""
        self._gzip = GzipStream(self._keep_tail)

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
            raise CheckFailed(
                "is incomplete: it does not end with '-- Dump completed' (mysqldump stopped before the end)"
            )
        members = "" if self._gzip.members == 1 else f" ({self._gzip.members} members)"
        return f"gzip stream complete{members}, ends with '-- Dump completed'"


class TarCheck:
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
        self.pax_size = None
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
                    raise CheckFailed("is corrupt: non-zero data after an all-zero header block")
                self._offset += end - pos
                return
            if self._skip and not self._sparse_ext:
                take = min(self._skip, end - pos)
                if self._pax is not None:
                    self._pax += view[pos : pos + take]
                self._skip -= take
                pos += take
                self._offset += take
                if not self._skip and self._pax is not None:
                    self.pax_size = pax_size(bytes(self._pax[: self._pax_length]))
                    self._pax = None
                continue
            take = min(tarfile.BLOCKSIZE - len(self._header), end - pos)
            self._header += view[pos : pos + take]
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
            raise CheckFailed(f"is corrupt: bad tar header at byte {self._offset} ({exc})") from None
        size = info.size
        if info.type in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
            if size > _MAX_PAX_HEADER:
                raise CheckFailed(f"is corrupt: implausible {size}-byte pax header at byte {self._offset}")
            self._pax = bytearray()
            self._pax_length = size  # the data; the rest of the last block is padding
        elif info.type not in (tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if self.pax_size is not None:
                size, self.pax_size = self.pax_size, None
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
            raise CheckFailed(f"is truncated: it ends in the middle of an entry (after {self._offset} bytes)")
        if not self._ended:
            if not self._offset:
                raise CheckFailed("is empty")
            raise CheckFailed("is truncated: it ends without the tar end-of-archive marker")
        return f"tar readable to the end ({self.entries} entries)"


def pax_size(data: bytes) -> int | None:
    """The 'size' record of a pax extended header, if any (it overrides the next header's size)."""
    size = None
    pos = 0
    while pos < len(data):
        match = re.match(rb"(\d+) ", data[pos : pos + 24])
        if not match or int(match.group(1)) <= 0:
            raise CheckFailed("is corrupt: malformed pax extended header")
        length = int(match.group(1))
        record = data[pos + match.end() : pos + length]
        key, _, value = record.rstrip(b"\n").partition(b"=")
        if key == b"size":
            if not value.isdigit():
                raise CheckFailed("is corrupt: malformed pax size record")
            size = int(value)
        pos += length
    return size


class TgzCheck:
    """A gzip-compressed tar (bench --compress writes .tgz)."""

    def __init__(self):
        self._tar = TarCheck()
        self._gzip = GzipStream(self._tar.feed)

    def feed(self, data) -> None:
        self._gzip.feed(data)

    def finish(self) -> str:
        self._gzip.finish()
        return "gzip stream complete, " + self._tar.finish()


class JsonObjectCheck:
    """site_config.json: a JSON object."""

    def __init__(self):
        self._data = bytearray()

    def feed(self, data) -> None:
        if len(self._data) + len(data) > _MAX_JSON:
            raise CheckFailed(f"is implausibly large for a site config (over {_MAX_JSON >> 20} MiB)")
        self._data += data

    def finish(self) -> str:
        try:
            doc = json.loads(bytes(self._data))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckFailed(f"is not valid JSON ({exc})") from None
        if not isinstance(doc, dict):
            raise CheckFailed("is not a JSON object")
        return "valid JSON object"


def plain_checker(part: str, head: bytes):
    """The content check and published suffix of one unencrypted part (tars by content: gzip magic means .tgz)."""
    if part == "database":
        return DumpCheck(), ".sql.gz"
    if part == "site_config":
        return JsonObjectCheck(), ".site_config.json"
    if head[:2] == _GZIP_MAGIC:
        return TgzCheck(), f".{part}.tgz"
    return TarCheck(), f".{part}.tar"


class TarOrTgzCheck:
    """A files archive whose compression is only known once its first bytes are seen (after decryption)."""

    def __init__(self):
        self._check = None

    def feed(self, data) -> None:
        if self._check is None:
            self._check = TgzCheck() if bytes(data[:2]) == _GZIP_MAGIC else TarCheck()
        self._check.feed(data)

    def finish(self) -> str:
        if self._check is None:
            raise CheckFailed("is empty")
        return self._check.finish()
