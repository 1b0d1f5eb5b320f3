"""Streaming a published file: full, ranges (resume), HEAD, 416, header safety, closing the file."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import threading
from pathlib import Path

import bottle
import pytest
import waitress.server

from fmappliance.agent import downloads
from fmappliance.agent.downloads import file_response

NAME = "2026-01-13_02-00-03.sql.gz"


class TrackedFile(io.FileIO):
    """A file that tells the test when it was closed."""

    def __init__(self, path, closed_event: threading.Event | None = None):
        super().__init__(path, "rb")
        self.closed_event = closed_event or threading.Event()

    def close(self):
        super().close()
        self.closed_event.set()


@pytest.fixture
def payload(tmp_path) -> Path:
    path = tmp_path / NAME
    path.write_bytes(os.urandom(1_000_000))
    return path


def respond(path: Path, *, range_header=None, method="GET", if_range=None, name=NAME):
    handle = TrackedFile(path)
    response = file_response(handle, os.stat(path), name, range_header=range_header, method=method, if_range=if_range)
    return response, handle


def body_of(response) -> bytes:
    if isinstance(response.body, (bytes, str)):
        return response.body if isinstance(response.body, bytes) else response.body.encode()
    chunks = list(response.body)
    assert all(len(chunk) <= downloads.CHUNK_SIZE for chunk in chunks)
    return b"".join(chunks)


# ---- file_response in-process ----


def test_a_full_download_has_length_type_disposition_and_validators(payload):
    response, handle = respond(payload)
    assert response.status_code == 200
    headers = response.headers
    assert headers["Content-Length"] == str(payload.stat().st_size)
    assert headers["Content-Type"] == "application/gzip"
    assert headers["Content-Disposition"] == f'attachment; filename="{NAME}"'
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Cache-Control"] == "no-store"
    assert headers["ETag"].startswith('"') and headers["Last-Modified"].endswith("GMT")
    assert body_of(response) == payload.read_bytes()
    assert handle.closed


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=0-99", 0, 99),  # first bytes
        ("bytes=999900-", 999900, 999999),  # open-ended (resume)
        ("bytes=-100", 999900, 999999),  # suffix
        ("bytes=500-2000000", 500, 999999),  # end past the file is clipped
        ("bytes=-5000000", 0, 999999),  # suffix longer than the file
        ("BYTES = 10 - 19 ", 10, 19),  # case and spaces are tolerated
    ],
)
def test_a_single_range_is_served_as_206(payload, header, first, last):
    response, handle = respond(payload, range_header=header)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/1000000"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert body_of(response) == payload.read_bytes()[first : last + 1]
    assert handle.closed


@pytest.mark.parametrize("header", ["bytes=1000000-", "bytes=2000000-3000000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_size(payload, header):
    response, handle = respond(payload, range_header=header)
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */1000000"
    assert b"not satisfiable" in body_of(response)
    assert handle.closed


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-10,20-30",  # several ranges: the whole file (no multipart bodies)
        "bytes=10-5",  # last before first: invalid, ignored
        "bytes=abc",
        "items=0-10",
        "bytes=-",
        "bytes=" + "9" * 5000 + "-",  # absurdly long number: ignored, no crash
        "",
    ],
)
def test_other_range_headers_get_the_whole_file(payload, header):
    response, _ = respond(payload, range_header=header)
    assert response.status_code == 200
    assert body_of(response) == payload.read_bytes()


def test_a_range_with_a_stale_if_range_gets_the_whole_file(payload):
    fresh, _ = respond(payload, method="HEAD")
    etag = fresh.headers["ETag"]
    matching, _ = respond(payload, range_header="bytes=0-9", if_range=etag)
    assert matching.status_code == 206
    assert body_of(matching) == payload.read_bytes()[:10]
    stale, _ = respond(payload, range_header="bytes=0-9", if_range='"other"')
    assert stale.status_code == 200
    assert body_of(stale) == payload.read_bytes()


def test_head_sends_headers_only_and_closes_the_file(payload):
    response, handle = respond(payload, method="HEAD", range_header="bytes=0-9")
    assert response.status_code == 200  # Range applies to GET only
    assert response.headers["Content-Length"] == "1000000"
    assert body_of(response) == b""
    assert handle.closed


def test_an_empty_file_is_a_200_with_no_body(tmp_path):
    empty = tmp_path / "2026-01-13_02-00-03.site_config.json"
    empty.write_bytes(b"")
    response, handle = respond(empty, name=empty.name)
    assert response.status_code == 200 and response.headers["Content-Length"] == "0"
    assert response.headers["Content-Type"] == "application/json"
    assert handle.closed


@pytest.mark.parametrize(
    "name, shown",
    [
        ('evil"; filename="x.sh', "evil filename=x.sh"),
        ("a\r\nSet-Cookie: session=1.tar", "aSet-Cookie: session=1.tar"),
        ("naïve-backup.tar", "nave-backup.tar"),
        ("..\\..\\x.json", "....x.json"),
        ("../etc/passwd", ".._etc_passwd"),
        ('"\r\n;', "backup"),
    ],
)
def test_odd_download_names_cannot_break_the_disposition_header(payload, name, shown):
    response, _ = respond(payload, name=name)
    response.body.close()
    disposition = response.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="{shown}"'
    assert not set(disposition) & {"\r", "\n", "\\"} and disposition.count('"') == 2


@pytest.mark.parametrize(
    "name, content_type",
    [
        ("x.sql.gz", "application/gzip"),
        ("x.files.tgz", "application/gzip"),
        ("x.files.tar", "application/x-tar"),
        ("x.json", "application/json"),
        ("x.bin", "application/octet-stream"),
    ],
)
def test_content_type_follows_the_suffix(name, content_type):
    assert downloads.content_type_for(name) == content_type


def test_an_unstarted_body_still_closes_the_file_when_the_server_closes_it(payload):
    response, handle = respond(payload)
    response.body.close()
    assert handle.closed


# ---- over a real socket: waitress + a tiny bottle app ----


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    closed = {}
    app = bottle.Bottle()

    @app.get("/files/<name>")
    def download(name):
        path = root / name
        closed[name] = threading.Event()
        handle = TrackedFile(path, closed[name])
        return file_response(
            handle,
            os.fstat(handle.fileno()),
            name,
            range_header=bottle.request.get_header("Range"),
            method=bottle.request.method,
            if_range=bottle.request.get_header("If-Range"),
        )

    srv = waitress.server.create_server(app, host="127.0.0.1", port=0, threads=2)
    stopping = threading.Event()

    def serve():
        try:
            srv.run()
        except OSError:  # the loop's select() sees the sockets closed under it at teardown
            if not stopping.is_set():
                raise

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"port": srv.effective_port, "root": root, "closed": closed}
    stopping.set()
    srv.close()
    srv.task_dispatcher.shutdown()
    thread.join(5)


def request(port: int, method: str, path: str, headers: dict | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def test_an_interrupted_download_resumes_with_range_to_the_same_sha256(server):
    data = os.urandom(3_000_000)
    (server["root"] / NAME).write_bytes(data)
    first, part1 = request(server["port"], "GET", f"/files/{NAME}", {"Range": "bytes=0-1234566"})
    assert first.status == 206 and len(part1) == 1234567
    etag = first.getheader("ETag")
    second, part2 = request(
        server["port"], "GET", f"/files/{NAME}", {"Range": f"bytes={len(part1)}-", "If-Range": etag}
    )
    assert second.status == 206
    assert second.getheader("Content-Range") == "bytes 1234567-2999999/3000000"
    assert hashlib.sha256(part1 + part2).hexdigest() == hashlib.sha256(data).hexdigest()
    assert server["closed"][NAME].wait(5)


def test_full_get_head_and_416_over_http(server):
    data = os.urandom(700_000)
    name = "2026-01-14_02-00-03.files.tar"
    (server["root"] / name).write_bytes(data)
    full, body = request(server["port"], "GET", f"/files/{name}")
    assert (full.status, body) == (200, data)
    assert full.getheader("Content-Type") == "application/x-tar"
    assert full.getheader("Content-Disposition") == f'attachment; filename="{name}"'
    head, body = request(server["port"], "HEAD", f"/files/{name}")
    assert (head.status, body, head.getheader("Content-Length")) == (200, b"", "700000")
    bad, body = request(server["port"], "GET", f"/files/{name}", {"Range": "bytes=700000-"})
    assert bad.status == 416 and bad.getheader("Content-Range") == "bytes */700000"
    # A range inside the file: waitress sends it from the file itself (wsgi.file_wrapper), exactly.
    middle, body = request(server["port"], "GET", f"/files/{name}", {"Range": "bytes=300000-300099"})
    assert (middle.status, body) == (206, data[300000:300100])


def test_the_body_read_as_a_file_stops_at_the_end_of_the_range(payload):
    """A server without wsgi.file_wrapper reads the body as a file until it is empty: never past the range."""
    response, handle = respond(payload, range_header="bytes=10-29")
    body = response.body
    assert body.tell() == 10 and body.seekable()
    assert body.read(15) + body.read() == payload.read_bytes()[10:30]
    assert body.read() == b""
    body.close()
    assert handle.closed


def test_a_client_that_disconnects_mid_download_gets_the_file_closed(server):
    # Bigger than waitress's 16 MiB output high-water mark, so the app thread is still sending.
    name = "2026-01-15_02-00-03.sql.gz"
    (server["root"] / name).write_bytes(b"x" * (48 << 20))
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
    sock.sendall(f"GET /files/{name} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
    sock.close()
    assert server["closed"][name].wait(10)
