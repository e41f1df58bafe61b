"""A loopback webhook receiver: records every JSON body POSTed to it; can fail or hold requests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    """Answers the first ``fail_first`` POSTs with ``fail_status``, later ones 204; with ``hold`` set,
    each request waits for ``release`` (an Event) before it is answered."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503, hold: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_first, self.fail_status = fail_first, fail_status
        self.hold, self.release = hold, threading.Event()
        self.arrived = threading.Event()
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.changed:
                    receiver.attempts += 1
                    attempt = receiver.attempts
                receiver.arrived.set()
                if receiver.hold:
                    receiver.release.wait(30)
                if attempt <= receiver.fail_first:
                    self.send_response(receiver.fail_status)
                    self.end_headers()
                    return
                with receiver.changed:
                    receiver.payloads.append(json.loads(body))
                    receiver.changed.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-token-abc123"

    def wait_for(self, count: int, timeout_s: float) -> list[dict[str, Any]]:
        """The payloads once ``count`` have arrived (or whatever arrived within ``timeout_s``)."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.payloads) >= count, timeout=timeout_s)
            return list(self.payloads)


@contextmanager
def running_webhook(**options) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(**options)
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(timeout=5)
