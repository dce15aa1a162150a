"""Engine.IO connection limits (api-contract.md v1.1, "Real time"):

- a connection that has not completed an authenticated Socket.IO ``connect``
  within ``SOCKETIO_CONNECT_TIMEOUT_SECONDS`` is closed by the server;
- at most ``SOCKETIO_MAX_CONNECTIONS_PER_IP`` open Engine.IO connections per
  client address (``REMOTE_ADDR``, after ``TRUSTED_PROXY_HOPS``: ProxyFix is the
  outermost middleware); one more is refused at the handshake (python-engineio
  answers ``401`` to a polling handshake and closes a websocket one).

:class:`ConnectionGuard` wraps the Engine.IO ``connect``/``disconnect`` handlers
that python-socketio registers, so it sees every connection whatever its
transport, before the Socket.IO layer does. One sweeper task per process closes
the overdue handshakes (a greenlet under gevent, a thread under threading).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Sweeper:
    """Runs ``sweep()`` every ``interval`` seconds in one background task of a
    python-socketio ``server`` (a greenlet under gevent, a thread under threading),
    started by the first :meth:`ensure_started`; an error in one pass is logged and
    the next pass runs."""

    def __init__(self, sweep, interval: float, what: str):
        self._sweep = sweep
        self.interval = interval
        self.what = what
        self._started = False
        self._lock = threading.Lock()

    def ensure_started(self, server) -> None:
        if self._started:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        server.start_background_task(self._forever, server)

    def _forever(self, server) -> None:
        while True:
            server.sleep(self.interval)
            try:
                self._sweep()
            except Exception:  # noqa: BLE001 - keep sweeping
                log.exception("realtime: %s sweep failed", self.what)


def close_transport(eio, eio_sid: str) -> None:
    """Close an Engine.IO connection without waiting (``eio``: python-engineio Server).

    ``eio.disconnect()`` waits until the client has read its outgoing queue, which
    an abandoned long-polling session never does: it would block the caller (a
    sweeper) for good. Here the CLOSE packet is queued (a websocket writer sends it),
    the session dropped, and nothing waited for."""
    sock = eio.sockets.get(eio_sid)
    if sock is None:
        return
    try:
        sock.close(wait=False, reason=eio.reason.SERVER_DISCONNECT)
    finally:
        eio.sockets.pop(eio_sid, None)


class ConnectionGuard:
    """Counts open Engine.IO connections per address and enforces the connect deadline.

    ``timeout`` is in seconds (<= 0: no deadline); ``per_ip`` is a count (<= 0: no cap).
    """

    SWEEP_SECONDS = 0.5

    def __init__(self, server, timeout: float, per_ip: int):
        self.server = server  # python-socketio Server
        self.timeout = float(timeout)
        self.per_ip = int(per_ip)
        self._lock = threading.Lock()
        self._addr_of: dict[str, str] = {}  # eio sid -> client address
        self._per_addr: dict[str, int] = {}
        self._pending: dict[str, float] = {}  # eio sid -> deadline (monotonic), until authenticated
        self._sweeper = Sweeper(self.sweep, self.SWEEP_SECONDS, "connect-deadline")
        eio = server.eio
        self._inner_connect = eio.handlers["connect"]
        self._inner_disconnect = eio.handlers["disconnect"]
        eio.on("connect", self._on_connect)
        eio.on("disconnect", self._on_disconnect)

    # ------------------------------------------------------------------ Engine.IO hooks

    def _on_connect(self, eio_sid: str, environ: dict):
        addr = environ.get("REMOTE_ADDR") or "?"
        with self._lock:
            if self.per_ip > 0 and self._per_addr.get(addr, 0) >= self.per_ip:
                refused = True
            else:
                refused = False
                self._addr_of[eio_sid] = addr
                self._per_addr[addr] = self._per_addr.get(addr, 0) + 1
                if self.timeout > 0:
                    self._pending[eio_sid] = time.monotonic() + self.timeout
        if refused:
            log.warning("realtime: refused a connection from %s: %d open (SOCKETIO_MAX_CONNECTIONS_PER_IP)",
                        addr, self.per_ip)
            return "Too many connections from this address."  # engineio: rejected, 401
        if self.timeout > 0:
            self._sweeper.ensure_started(self.server)
        return self._inner_connect(eio_sid, environ)

    def _on_disconnect(self, eio_sid: str, *args):
        self._forget(eio_sid)
        return self._inner_disconnect(eio_sid, *args)

    # ------------------------------------------------------------------ bookkeeping

    def authenticated(self, eio_sid: str | None) -> None:
        """The connection completed an authenticated Socket.IO ``connect``: no deadline."""
        if eio_sid is not None:
            with self._lock:
                self._pending.pop(eio_sid, None)

    def _forget(self, eio_sid: str) -> None:
        with self._lock:
            self._pending.pop(eio_sid, None)
            addr = self._addr_of.pop(eio_sid, None)
            if addr is not None:
                left = self._per_addr.get(addr, 1) - 1
                if left > 0:
                    self._per_addr[addr] = left
                else:
                    self._per_addr.pop(addr, None)

    def open_connections(self, addr: str) -> int:
        """Open Engine.IO connections from ``addr`` in this process."""
        return self._per_addr.get(addr, 0)

    def sweep(self, now: float | None = None) -> list[str]:
        """Close every connection past its connect deadline; returns their Engine.IO sids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            overdue = [sid for sid, deadline in self._pending.items() if deadline <= now]
            for sid in overdue:
                del self._pending[sid]
        for sid in overdue:
            try:
                close_transport(self.server.eio, sid)
            except Exception:  # noqa: BLE001 - it may have closed meanwhile
                log.debug("realtime: closing overdue %s failed", sid, exc_info=True)
            self._forget(sid)  # engineio may not call the handler for a half-open socket
        if overdue:
            log.info("realtime: closed %d connection(s) without an authenticated connect within %.0f s",
                     len(overdue), self.timeout)
        return overdue
