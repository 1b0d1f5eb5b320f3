"""A local HTTP receiver for notification webhooks: records every JSON POST it gets."""

from __future__ import annotations

import http.server
import json
import threading


class WebhookReceiver:
    """Serves on a free loopback port; ``url`` to configure, ``received`` and ``arrived`` to assert on."""

    def __init__(self):
        self.received: list[dict] = []
        self.arrived = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.received.append(json.loads(body))
                outer.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
