"""A real HTTP webhook receiver on 127.0.0.1 for tests (stdlib ``http.server`` in a
thread): verifies each request's signature and timestamp as a real receiver would,
records what it got, and answers as told (500 N times then 200, a fixed status, a
delay). ``stop()``/``start()`` take it down and bring it back on the same port."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from tasktracker.webhooks import signing


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int


@dataclass
class Receiver:
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
    secrets: dict[str, str] = field(default_factory=dict)  # path -> secret
    fail_next: int = 0
    status: int = 200
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    port: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.delay:
                    time.sleep(receiver.delay)
                headers = {k: v for k, v in self.headers.items()}
                secret = receiver.secrets.get(self.path)
                verified = secret is not None and signing.verify(
                    secret, headers.get("X-TaskTracker-Timestamp"), body,
                    headers.get("X-TaskTracker-Signature", ""), now=receiver.clock())
                with receiver._lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = 500
                    else:
                        status = receiver.status if verified else 401
                    receiver.received.append(Received(self.path, headers, body, verified, status))
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # ------------------------------------------------------------------ queries
    def succeeded(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx (what the sender counts as delivered)."""
        return [r for r in self.received if 200 <= r.answered < 300 and (path is None or r.path == path)]

    def delivery_ids(self, path: str | None = None) -> list[int]:
        return [int(r.headers["X-TaskTracker-Delivery"]) for r in self.succeeded(path)]
