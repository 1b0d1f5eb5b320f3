"""Backup downloads relayed from the agent: identical bytes, Range resume, constant memory,
and twenty slow downloads that do not stall the pages (real waitress)."""

import hashlib
import http.client
import random
import socket
import tracemalloc

import pytest
from fake_agent import serve_in_thread, stop_server
from support.polling import wait_for
from support.wsgi import WSGIClient

STAMP = "2026-11-25_02-00-03"
DB_FILE = f"{STAMP}.sql.gz"
URL = f"/download/prod/site1.example.com/{DB_FILE}"
CONTENT = random.Random(1).randbytes(3 * 1024 * 1024 + 123)


@pytest.fixture
def with_backup(fake_agent):
    return fake_agent.add_backup("prod", "site1.example.com", STAMP, {DB_FILE: CONTENT, f"{STAMP}.files.tar": 1024**3})


def test_full_download_is_byte_identical_with_headers(logged_in, with_backup):
    response = logged_in.get(URL)
    assert response.status == 200
    assert hashlib.sha256(response.body).hexdigest() == with_backup["files"][0]["sha256"]
    assert response.header("Content-Length") == str(len(CONTENT))
    assert response.header("Content-Disposition") == f'attachment; filename="{DB_FILE}"'
    assert response.header("Accept-Ranges") == "bytes"


def test_range_resumed_download_adds_up_to_the_same_file(logged_in, with_backup):
    first = logged_in.get(URL, headers={"Range": "bytes=0-999999"})
    assert first.status == 206 and len(first.body) == 1_000_000
    assert first.header("Content-Range") == f"bytes 0-999999/{len(CONTENT)}"
    rest = logged_in.get(URL, headers={"Range": "bytes=1000000-"})
    assert rest.status == 206
    assert hashlib.sha256(first.body + rest.body).hexdigest() == with_backup["files"][0]["sha256"]


def test_unsatisfiable_range_is_416(logged_in, with_backup):
    assert logged_in.get(URL, headers={"Range": f"bytes={len(CONTENT) + 10}-"}).status == 416


def test_download_streams_in_chunks_with_flat_memory(app, logged_in, with_backup):
    """256 MiB of a 1 GiB file pass through the app in bounded chunks; memory stays bounded."""
    tracemalloc.start()
    try:
        body = logged_in.stream("GET", f"/download/prod/site1.example.com/{STAMP}.files.tar")
        total, chunks, biggest = 0, 0, 0
        for chunk in body.chunks:
            total += len(chunk)
            chunks += 1
            biggest = max(biggest, len(chunk))
            if total >= 256 * 1024 * 1024:
                break
        body.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body.status == 200
    assert chunks > 100 and biggest <= 256 * 1024
    # Bounded buffers on both sides (the fake agent runs in this process too), far below the
    # 256 MiB that went through: memory does not grow with the file.
    assert peak < 16 * 1024 * 1024, f"peak Python memory {peak / 1e6:.1f} MB while relaying 256 MiB"


def test_bad_file_name_is_400_without_asking_the_agent(logged_in, fake_agent):
    before = len(fake_agent.requests)
    # A decoded slash makes it a path no page matches.
    assert logged_in.get("/download/prod/site1.example.com/..%2f..%2fetc%2fpasswd").status == 404
    assert logged_in.get("/download/prod/site1.example.com/config.yaml").status == 400
    assert len(fake_agent.requests) == before


def test_missing_file_is_404_and_audited(logged_in, app, with_backup):
    response = logged_in.get(f"/download/prod/site1.example.com/{STAMP}.private-files.tar")
    assert response.status == 404
    row = app.ctx.audit.recent(1)[0]
    assert row["action"] == "download" and row["result"].startswith("failed")


def test_download_is_audited(logged_in, app, with_backup):
    logged_in.get(URL)
    row = app.ctx.audit.recent(1)[0]
    assert (row["action"], row["target"], row["result"]) == ("download", f"prod/site1.example.com/{DB_FILE}", "ok")


@pytest.mark.parametrize("fetch_site", ["cross-site", "same-site", "Cross-Site"])
def test_download_started_by_another_site_is_403_audited_and_never_reaches_the_agent(
    logged_in, app, fake_agent, with_backup, fetch_site
):
    before = len(fake_agent.requests)
    for method in ("GET", "HEAD"):
        response = logged_in.request(method, URL, headers={"Sec-Fetch-Site": fetch_site})
        assert response.status == 403
        if method == "GET":
            assert "start only from the dashboard" in response.text
    assert len(fake_agent.requests) == before
    row = app.ctx.audit.recent(1)[0]
    assert (row["action"], row["target"]) == ("download", f"prod/site1.example.com/{DB_FILE}")
    assert row["result"].startswith("refused: started from another site")


@pytest.mark.parametrize("fetch_site", ["same-origin", "none", None])
def test_download_from_the_dashboard_itself_a_typed_url_or_a_client_without_fetch_metadata_is_served(
    logged_in, with_backup, fetch_site
):
    headers = {"Sec-Fetch-Site": fetch_site} if fetch_site else {}
    response = logged_in.get(URL, headers=headers)
    assert response.status == 200 and response.body == CONTENT


def test_download_started_by_another_site_is_refused_in_accel_mode_too(tmp_path, fake_agent, clock, with_backup):
    from support.config_factory import write_config

    from fmappliance.config import load_config
    from fmappliance.dashboard.app import make_app

    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "download_mode": "accel"}))
    client = WSGIClient(make_app(config, clock=clock))
    client.login()
    response = client.get(URL, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status == 403 and response.header("X-Accel-Redirect") is None


def _get(port, path, cookie, timeout=10.0):
    """One request; a stalled server fails it with a socket timeout instead of hanging the test."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers={"Cookie": f"fmsession={cookie}"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_download_slots_leave_threads_for_pages_and_for_the_agent():
    from fmappliance.dashboard.pages_backups import download_slots

    assert download_slots({"dashboard": {"threads": 32}, "agent": {"threads": 40}}) == 24
    assert download_slots({"dashboard": {"threads": 32}, "agent": {"threads": 16}}) == 12
    assert download_slots({"dashboard": {"threads": 4}, "agent": {"threads": 4}}) == 1


@pytest.fixture
def app_for_many_downloads(tmp_path, fake_agent, clock):
    from support.config_factory import write_config

    from fmappliance.config import load_config
    from fmappliance.dashboard.app import make_app

    # The agent needs a thread per relayed download too; 32 dashboard threads -> 24 download slots.
    return make_app(
        load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url}, agent={"threads": 32})), clock=clock
    )


def test_twenty_slow_downloads_do_not_stall_pages_over_real_waitress(app_for_many_downloads, with_backup):
    app = app_for_many_downloads
    logged_in = WSGIClient(app)
    logged_in.login()
    # Small send buffers so the relaying threads reach their blocked state quickly.
    server, thread = serve_in_thread(app, threads=32, outbuf_high_watermark=256 * 1024, outbuf_overflow=256 * 1024)
    port = server.effective_port
    cookie = logged_in.cookie("fmsession")
    slow = []
    try:
        big = f"/download/prod/site1.example.com/{STAMP}.files.tar"
        for _ in range(20):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {big} HTTP/1.1\r\nHost: x\r\nCookie: fmsession={cookie}\r\n\r\n".encode())
            assert sock.recv(12).startswith(b"HTTP/1.1 200")
            slow.append(sock)  # ...and then never read again: a very slow client
        # Let the relaying threads fill their buffers and block on the slow clients.
        wait_for(lambda: server.task_dispatcher.active_count >= 20, 10, "20 relaying threads blocked on slow clients")
        # Pages still answer while the downloads hold their threads (how fast: the dashboard benchmark).
        for path, expected in (("/healthz", b"ok"), ("/dashboard", b'data-stack="prod"')):
            for _ in range(3):
                status, body = _get(port, path, cookie)
                assert status == 200 and expected in body
        assert server.task_dispatcher.active_count >= 20  # the downloads really hold threads
    finally:
        for sock in slow:
            sock.close()
        stop_server(server, thread)


def test_accel_mode_hands_the_file_to_nginx_after_the_agent_confirms_it(tmp_path, fake_agent, clock, with_backup):
    from support.config_factory import write_config

    from fmappliance.config import load_config
    from fmappliance.dashboard.app import make_app

    config = load_config(write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "download_mode": "accel"}))
    client = WSGIClient(make_app(config, clock=clock))
    client.login()
    response = client.get(URL, headers={"Range": "bytes=0-9"})
    assert response.status == 200 and response.body == b""
    assert response.header("X-Accel-Redirect") == f"/_protected_backups/prod/site1.example.com/{DB_FILE}"
    assert response.header("Content-Disposition") == f'attachment; filename="{DB_FILE}"'
    assert ("HEAD", f"/backups/prod/site1.example.com/{DB_FILE}", None) in fake_agent.requests
    assert client.get(f"/download/prod/site1.example.com/{STAMP}.private-files.tar").status == 404


def test_downloads_beyond_the_free_threads_get_503_and_slots_come_back(tmp_path, fake_agent, clock, with_backup):
    from support.config_factory import write_config

    from fmappliance.config import load_config
    from fmappliance.dashboard.app import make_app

    # 10 threads, 8 kept for pages: two downloads at a time.
    config = load_config(
        write_config(tmp_path, dashboard={"agent_url": fake_agent.url, "threads": 10}, agent={"threads": 40})
    )
    app = make_app(config, clock=clock)
    client = WSGIClient(app)
    client.login()
    big = f"/download/prod/site1.example.com/{STAMP}.files.tar"
    running = [client.stream("GET", big) for _ in range(2)]  # started, not finished
    refused = client.get(big)
    assert refused.status == 503 and refused.header("Retry-After") == "60"
    assert "Too many downloads" in refused.text
    for body in running:
        body.close()
    assert client.get(URL).status == 200  # slots are free again
    assert client.get(f"/download/prod/site1.example.com/{STAMP}.private-files.tar").status == 404
    assert client.get(f"/download/prod/site1.example.com/{STAMP}.private-files.tar").status == 404
    assert client.get(URL).status == 200  # failed downloads do not leak slots
