"""A streamed response read line by line over a real socket: a followed log (agent) or Server-Sent
Events (dashboard), as a browser tab or another client would hold it open.

``LineStream(port, path, headers)`` sends the request and, on a 200, collects the lines in a thread:
``lines`` (every line), ``data`` (the payloads of ``data:`` lines), ``data_count``. ``close()`` drops
the socket like a closing tab, so the server sees the client go.
"""

from __future__ import annotations

import http.client
import socket
import threading


class LineStream:
    def __init__(self, port: int, path: str, headers: dict | None = None, timeout: float = 10, keep: bool = True):
        """``keep=False`` counts ``data:`` lines without keeping them (for floods of millions)."""
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers=headers or {})
        self.sock = self.conn.sock  # the response keeps using it after http.client lets go of it
        self.resp = self.conn.getresponse()
        self.keep = keep
        self.lines: list[str] = []
        self.data_count = 0
        if self.resp.status == 200:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for raw in self.resp:
                line = raw.decode(errors="replace").rstrip("\n")
                if line.startswith("data: "):
                    self.data_count += 1
                if self.keep:
                    self.lines.append(line)
        except (OSError, ValueError, http.client.HTTPException):
            pass

    @property
    def data(self) -> list[str]:
        return [line[len("data: ") :] for line in self.lines if line.startswith("data: ")]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.conn.close()
