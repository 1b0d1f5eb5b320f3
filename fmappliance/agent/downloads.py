"""HTTP responses that stream a published backup file: Range (resume), HEAD, safe headers.

bottle's static_file is not used: it reopens the file by path (following symlinks) after the caller
checked it, while here the already opened, already checked file object is what gets sent.
"""

from __future__ import annotations

import email.utils
import json
import os
import re

import bottle

CHUNK_SIZE = 256 * 1024

_CONTENT_TYPES = (
    (".gz", "application/gzip"),
    (".tgz", "application/gzip"),
    (".tar", "application/x-tar"),
    (".json", "application/json"),
)
# One range only; 19 digits caps values below 2**63 (and below int()'s digit limit).
_SINGLE_RANGE = re.compile(r"\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", re.ASCII)


class _Unsatisfiable(Exception):
    pass


def file_response(
    fileobj,
    st: os.stat_result,
    download_name: str,
    *,
    range_header: str | None,
    method: str,
    if_range: str | None = None,
) -> bottle.HTTPResponse:
    """A 200/206/416 response for an open file; the body streams in 256 KiB chunks and closes the file.

    ``range_header``/``if_range`` are the request's Range and If-Range values; Range is honoured for
    GET only (RFC 9110 §14.2) and only while If-Range, when sent, still matches this file.
    """
    size = st.st_size
    etag = f'"{size:x}-{st.st_mtime_ns:x}"'
    last_modified = email.utils.formatdate(st.st_mtime, usegmt=True)
    headers = {
        "Content-Type": content_type_for(download_name),
        "Content-Disposition": f'attachment; filename="{safe_download_name(download_name)}"',
        "Accept-Ranges": "bytes",
        "Last-Modified": last_modified,
        "ETag": etag,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    wanted = None
    if method == "GET" and range_header and (if_range is None or if_range.strip() in (etag, last_modified)):
        try:
            wanted = parse_range(range_header, size)
        except _Unsatisfiable:
            fileobj.close()
            body = json.dumps(
                {
                    "success": False,
                    "message": f"The requested range is not satisfiable: the file has {size} bytes.",
                }
            )
            headers.update(
                {
                    "Content-Type": "application/json",
                    "Content-Range": f"bytes */{size}",
                    "Content-Length": str(len(body)),
                }
            )
            headers.pop("Content-Disposition")
            return bottle.HTTPResponse(body=body, status=416, headers=headers)
    if wanted is None:
        status, start, length = 200, 0, size
    else:
        first, last = wanted
        status, start, length = 206, first, last - first + 1
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    if method == "HEAD" or length == 0:
        fileobj.close()
        return bottle.HTTPResponse(body=b"", status=status, headers=headers)
    return bottle.HTTPResponse(body=FileChunks(fileobj, start, length), status=status, headers=headers)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for one satisfiable byte range; None to send the whole file.

    Syntactically invalid headers and other units are ignored (whole file), as RFC 9110 asks.
    Several ranges would need a multipart/byteranges body; download managers resuming a file
    send one, so a multi-range request simply gets the whole file with 200.
    Raises _Unsatisfiable for a well-formed range that lies outside the file (-> 416).
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    match = _SINGLE_RANGE.fullmatch(spec)
    if not match:
        return None
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
        if last_text and last < first:
            return None
        if first >= size:
            raise _Unsatisfiable()
        return first, min(last, size - 1)
    if last_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _Unsatisfiable()
        return max(0, size - suffix), size - 1
    return None


def content_type_for(name: str) -> str:
    for suffix, content_type in _CONTENT_TYPES:
        if name.endswith(suffix):
            return content_type
    return "application/octet-stream"


def safe_download_name(name: str, fallback: str = "backup") -> str:
    """A file name that cannot break out of the quoted Content-Disposition parameter."""
    cleaned = "".join(c for c in name if " " <= c <= "~" and c not in '"\\;').strip()
    cleaned = cleaned.replace("/", "_")
    return cleaned or fallback


class FileChunks:
    """The body: ``length`` bytes from ``start`` (constant memory), iterable in CHUNK_SIZE reads and
    file-like (read/seek/tell, bounded to the range).

    File-like so that bottle hands it to the server's ``wsgi.file_wrapper``: waitress then reads the
    file only when the client's socket can take more, in socket-buffer-sized blocks.  Iterated, waitress
    would copy every chunk into its own buffer, which spills to temp files once a slow reader (a fleet
    link) leaves more than ``outbuf_overflow`` unsent: three copies of every byte (issue 24 §6).  The
    file sits at ``start`` from the outset: waitress takes ``tell()`` as the first byte to send and
    Content-Length as the count.

    The WSGI server calls close() when the response is done or the client went away; that closes
    the file, whether or not iteration ever started.
    """

    def __init__(self, fileobj, start: int, length: int):
        self._file = fileobj
        self._start = start
        self._length = length
        fileobj.seek(start)

    def __iter__(self):
        try:
            self._file.seek(self._start)
            remaining = self._length
            while remaining > 0:
                data = self._file.read(min(CHUNK_SIZE, remaining))
                if not data:
                    break  # the file shrank; the client sees a short body against Content-Length
                remaining -= len(data)
                yield data
        finally:
            self.close()

    def read(self, size: int | None = -1) -> bytes:
        """At most ``size`` bytes, never past the range's end (a server without file_wrapper reads to EOF).

        A sized read gives at most CHUNK_SIZE: waitress asks for the socket's whole send buffer (some MB on
        TCP) and reads what it sent once more to skip it, so larger reads only grow the agent's heap."""
        left = self._start + self._length - self._file.tell()
        if left <= 0:
            return b""
        return self._file.read(left if size is None or size < 0 else min(size, left, CHUNK_SIZE))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()
