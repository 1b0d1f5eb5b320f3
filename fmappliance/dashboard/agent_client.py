"""The only code that talks to the agent (HTTP JSON API, bearer token), on its Unix socket or TCP.

Every failure becomes an ``AgentError`` whose text an operator can act on, e.g.
"Agent unreachable at 127.0.0.1:9100: connection refused".  ``GET /stacks`` is cached
for a short time (also when it fails) so a busy dashboard asks the agent at most once
per TTL; actions invalidate the cache.
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time
import urllib.parse

from fmappliance.dashboard.request_ids import HEADER, for_agent

DOWNLOAD_CHUNK = 256 * 1024
STACKS_CACHE_SECONDS = 2.0
_RELAYED_HEADERS = (
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "Content-Disposition",
    "Content-Type",
    "Last-Modified",
    "ETag",
)


class AgentError(Exception):
    """A failed agent request; ``str()`` is the operator message, ``status`` the HTTP status (None: no answer).

    ``retry_after`` is the agent's Retry-After (seconds, as sent) on a refusal that may pass.
    """

    def __init__(self, message: str, status: int | None = None, retry_after: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after


class Download:
    """An open download from the agent: relay ``status``, ``headers`` and iterate ``chunks()``."""

    def __init__(self, conn, resp):
        self._conn = conn
        self._resp = resp
        self.status = resp.status
        self.headers = {name: resp.getheader(name) for name in _RELAYED_HEADERS if resp.getheader(name) is not None}

    def chunks(self):
        try:
            while True:
                block = self._resp.read(DOWNLOAD_CHUNK)
                if not block:
                    return
                yield block
        finally:
            self.close()

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the agent's Unix socket (``agent.socket``)."""

    def __init__(self, socket_path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


#: Lines a relayed log may have waiting for a slow browser before its reader pauses (constant memory).
LOG_QUEUE_LINES = 2000


class LogStream:
    """An open log stream from the agent.  A reader thread takes its lines off the socket (the
    stream may stay quiet for minutes, longer than any request timeout) into a bounded queue;
    :meth:`next_lines` hands them out.  :meth:`close` shuts the socket, which ends the agent's
    side (it kills its `docker compose logs` child) and the reader."""

    def __init__(self, conn, sock, resp):
        self._conn, self._sock, self._resp = conn, sock, resp
        self._queue: queue.Queue = queue.Queue(maxsize=LOG_QUEUE_LINES)
        self._closed = threading.Event()
        #: True when the stream broke off (connection lost mid-answer) instead of ending: worth re-opening.
        self.broken = False
        sock.settimeout(None)  # quiet is normal; close() ends a blocked read
        self._reader = threading.Thread(target=self._read, name="log-relay", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for raw in self._resp:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line and not self._put(line):  # an empty line only opens a quiet stream
                    return
        except (OSError, ValueError, http.client.HTTPException):
            self.broken = not self._closed.is_set()
        else:
            # http.client ends a chunked body quietly when the connection drops mid-body; only the
            # last (empty) chunk leaves chunk_left None.
            self.broken = bool(self._resp.chunked and self._resp.chunk_left is not None) and not self._closed.is_set()
        finally:
            self._put(None)

    def _put(self, item) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def next_lines(self, timeout: float, most: int = 500) -> list[str] | None:
        """Lines that arrived within ``timeout`` seconds ([] if none), None once the log ended."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        if first is None:
            return None
        lines = [first]
        while len(lines) < most:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)  # seen again on the next call
                break
            lines.append(line)
        return lines

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._conn.close()


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


class AgentClient:
    def __init__(
        self,
        agent_url: str,
        token: str,
        timeout: float,
        *,
        cache_seconds: float = STACKS_CACHE_SECONDS,
        clock=time.monotonic,
        socket_path: str = "",
    ):
        parsed = urllib.parse.urlsplit(agent_url)
        self.scheme = parsed.scheme
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.socket_path = socket_path
        self.where = socket_path or f"{self.host}:{self.port}"
        self.base_path = parsed.path.rstrip("/")
        self._auth = f"Bearer {token}"
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._cache_lock = threading.Lock()
        self._stacks_cache: tuple[float, dict | AgentError] | None = None  # (fetched_at, data or AgentError)

    @classmethod
    def from_config(cls, config: dict) -> AgentClient:
        """The agent of this config: on ``agent.socket`` when set, else ``dashboard.agent_url``."""
        dash = config["dashboard"]
        return cls(
            dash["agent_url"], config["security"]["token"], dash["agent_timeout"], socket_path=config["agent"]["socket"]
        )

    # -- transport ------------------------------------------------------------------

    def _connection(self):
        if self.socket_path:
            return UnixHTTPConnection(self.socket_path, self.timeout)
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=self.timeout)

    def _send(self, method: str, path: str, body: dict | None = None, headers: dict | None = None, on_sent=None):
        """Open a connection and send; returns (conn, response) or raises AgentError."""
        conn = self._connection()
        # X-FM-Request: the dashboard request's id, so its audit row matches the server's fleet audit.
        all_headers = {"Authorization": self._auth, "Accept": "application/json", HEADER: for_agent()}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        try:
            conn.request(method, self.base_path + path, body=data, headers=all_headers)
            if on_sent is not None:
                on_sent(conn)
            return conn, conn.getresponse()
        except (ConnectionRefusedError, FileNotFoundError):
            conn.close()
            raise AgentError(f"Agent unreachable at {self.where}: connection refused; is fm-agent running?") from None
        except TimeoutError:
            conn.close()
            raise AgentError(f"Agent at {self.where} did not answer within {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise AgentError(f"Agent unreachable at {self.where}: {reason}") from None

    def _exchange(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        """Send and read the whole answer; returns (response, body bytes) or raises AgentError."""
        conn, resp = self._send(method, path, body, headers)
        try:
            return resp, resp.read()
        except (OSError, http.client.HTTPException):
            raise AgentError(f"Agent at {self.where} broke off its answer") from None
        finally:
            conn.close()

    def _error_for(self, status: int, raw: bytes) -> AgentError:
        message = ""
        try:
            payload = json.loads(raw)
            if isinstance(payload, dict):
                message = str(payload.get("message") or "")
        except ValueError:
            pass
        if status == 401:
            return AgentError(
                "The agent rejected the dashboard's token (401): check security.token in the config of both.", status
            )
        if status >= 500:
            return AgentError(
                f"The agent failed ({status}): {message or 'no details; see the agent log (journalctl -u fm-agent)'}",
                status,
            )
        return AgentError(message or f"The agent refused the request ({status}).", status)

    def _refusal(self, conn, resp) -> AgentError:
        """A stream the agent refused (a log, a download): its error from the first 64 KiB of the answer."""
        try:
            raw = resp.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            raw = b""
        finally:
            conn.close()
        error = self._error_for(resp.status, raw)
        error.retry_after = resp.getheader("Retry-After")
        return error

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One JSON request; returns (status, payload) for 2xx, raises AgentError otherwise."""
        resp, raw = self._exchange(method, path, body)
        if not 200 <= resp.status < 300:
            raise self._error_for(resp.status, raw)
        try:
            payload = json.loads(raw)
        except ValueError:
            raise AgentError(
                f"Agent at {self.where} sent an answer the dashboard cannot read (not JSON)", resp.status
            ) from None
        if not isinstance(payload, dict):
            raise AgentError(f"Agent at {self.where} sent an unexpected answer", resp.status)
        return resp.status, payload

    # -- API --------------------------------------------------------------------------

    def stacks(self) -> dict:
        """``GET /stacks`` (cached for a moment, failures too); raises AgentError."""
        cached = self._stacks_cache
        if cached is None or self.clock() - cached[0] >= self.cache_seconds:
            with self._cache_lock:
                cached = self._stacks_cache
                if cached is None or self.clock() - cached[0] >= self.cache_seconds:
                    value: dict | AgentError
                    try:
                        value = self.request("GET", "/stacks")[1]
                    except AgentError as exc:
                        value = exc
                    cached = self._stacks_cache = (self.clock(), value)
        if isinstance(cached[1], AgentError):
            raise AgentError(cached[1].message, cached[1].status)
        return cached[1]

    def invalidate(self) -> None:
        self._stacks_cache = None

    def stack(self, name: str) -> dict:
        return self.request("GET", f"/stacks/{_quote(name)}")[1]

    def sites(self, stack: str) -> list[str]:
        """``GET /stacks/<stack>/sites``; AgentError with status 404 when the agent has no such stack."""
        sites = self.request("GET", f"/stacks/{_quote(stack)}/sites")[1].get("sites")
        if not isinstance(sites, list):
            raise AgentError(f"Agent at {self.where} sent an unexpected list of sites for {stack}")
        return [str(s) for s in sites]

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/jobs/{_quote(job_id)}")[1]

    def jobs(self, stack: str | None = None, limit: int = 50) -> list:
        query = urllib.parse.urlencode({k: v for k, v in (("stack", stack), ("limit", limit)) if v is not None})
        jobs = self.request("GET", f"/jobs?{query}")[1].get("jobs")
        return jobs if isinstance(jobs, list) else []

    def backups(self, stack: str, site: str) -> list:
        backups = self.request("GET", f"/backups/{_quote(stack)}/{_quote(site)}")[1].get("backups")
        return backups if isinstance(backups, list) else []

    def host_figures(self) -> dict:
        """``GET /host``: load, memory, free space and per-stack CPU/memory for the host panel."""
        return self.request("GET", "/host")[1]

    def metrics_text(self) -> str:
        """``GET /metrics``: the agent's series in the Prometheus text format, to relay as they are."""
        resp, raw = self._exchange("GET", "/metrics", headers={"Accept": "text/plain"})
        if resp.status != 200:
            raise self._error_for(resp.status, raw)
        if not (resp.getheader("Content-Type") or "").startswith("text/plain"):
            raise AgentError(
                f"Agent at {self.where} answered /metrics with something other than metrics text", resp.status
            )
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise AgentError(f"Agent at {self.where} sent metrics that are not UTF-8", resp.status) from None

    def backup(self, stack: str, site: str, backup_id: str) -> dict | None:
        """One published backup of a site (its listing entry), or None when there is no such backup."""
        return next((b for b in self.backups(stack, site) if isinstance(b, dict) and b.get("id") == backup_id), None)

    def offsite(self, stack: str, site: str) -> list | None:
        """``GET /offsite/{stack}/{site}``: the site's offsite snapshots, or None when offsite is not configured."""
        try:
            snapshots = self.request("GET", f"/offsite/{_quote(stack)}/{_quote(site)}")[1].get("snapshots")
        except AgentError as exc:
            if exc.status == 404 and "not configured" in (exc.message or ""):
                return None
            raise
        return snapshots if isinstance(snapshots, list) else []

    def offsite_backup(self, stack: str, site: str, backup_id: str) -> dict | None:
        """An offsite copy in the shape of a backup listing entry, or None when there is no such copy."""
        snap = next(
            (s for s in self.offsite(stack, site) or [] if isinstance(s, dict) and s.get("backup") == backup_id), None
        )
        if snap is None:
            return None
        return {**snap, "id": snap["backup"], "verified": True, "snapshot": snap.get("id")}

    def imports(self) -> list:
        """``GET /imports``: the sets of files waiting in the import folder, with their problems."""
        imports = self.request("GET", "/imports")[1].get("imports")
        return imports if isinstance(imports, list) else []

    def action(self, action: str, stack: str, site: str | None = None, **fields) -> dict:
        """``POST /action``; returns the agent's answer (success, message, job, duplicate).

        ``fields`` are the action's own extra fields (``backup``, ``from_site``, ``label``...);
        None values are left out.
        """
        body = {"action": action, "stack": stack}
        if site is not None:
            body["site"] = site
        body.update({key: value for key, value in fields.items() if value is not None})
        try:
            return self.request("POST", "/action", body)[1]
        finally:
            self.invalidate()

    def open_log_stream(self, stack: str, service: str, tail: int, follow: bool = True) -> LogStream:
        """Open ``GET /stacks/<stack>/logs``; AgentError (400, 404, 429 with retry_after, ...) when refused."""
        query = urllib.parse.urlencode({"service": service, "tail": tail, "follow": 1 if follow else 0})
        sent: dict = {}
        conn, resp = self._send(
            "GET",
            f"/stacks/{_quote(stack)}/logs?{query}",
            headers={"Accept": "text/plain"},
            # http.client lets go of the socket once the answer says "Connection: close"; the
            # stream still needs it, to shut it when the browser leaves.
            on_sent=lambda c: sent.setdefault("sock", c.sock),
        )
        if resp.status != 200:
            raise self._refusal(conn, resp)
        return LogStream(conn, sent["sock"], resp)

    def stream_download(
        self, stack: str, site: str, file: str, range_header: str | None = None, method: str = "GET"
    ) -> Download:
        """Open a backup file download; the caller relays status, headers and chunks."""
        headers = {"Accept": "*/*"}
        if range_header:
            headers["Range"] = range_header
        conn, resp = self._send(method, f"/backups/{_quote(stack)}/{_quote(site)}/{_quote(file)}", headers=headers)
        if resp.status not in (200, 206):
            raise self._refusal(conn, resp)
        return Download(conn, resp)
