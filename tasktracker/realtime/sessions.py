"""Live connections follow their login session and access (api-contract.md v1.1,
"Real time: connections follow the session and the access").

Each authenticated Socket.IO connection of this process is registered with its
user, the login session (``sid`` claim) and the access token's expiry
(:class:`LiveConnections`). The server disconnects it:

- at the token's expiry (a sweeper task checks every ``SWEEP_SECONDS``);
- when its session is revoked (logout, password change or reset) or its user is
  deactivated: every commit that does so broadcasts the user's id through the hot
  cache (:data:`tasktracker.core.hotcache.USERS`), in every process within
  milliseconds; :func:`recheck_users` then re-reads the session from the database;
- its ``task:<id>`` subscriptions end when the user no longer sees the task (site
  role lost: same broadcast; task unassigned or moved: :func:`recheck_task_room`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from flask import Flask

from tasktracker.core.hotcache import USERS, hot_state
from tasktracker.realtime.limits import Sweeper, close_transport

log = logging.getLogger(__name__)

NAMESPACE = "/"


@dataclass(frozen=True)
class Live:
    """One authenticated connection: ``user_id``, login session ``auth_sid``, ``expires_at``
    (the access token's ``exp``, Unix seconds)."""

    user_id: int
    auth_sid: str
    expires_at: float
    #: a personal access token's string when the connection authenticated with one
    #: (no login session then): the re-checks authenticate it again
    pat: str | None = None


def close(server, sid: str) -> None:
    """Disconnect Socket.IO connection ``sid`` from the server side (the client gets a
    DISCONNECT packet and its handlers run here), then drop its Engine.IO transport
    too, without waiting: a client that ignores the DISCONNECT keeps nothing open."""
    eio_sid = server.manager.eio_sid_from_sid(sid, NAMESPACE)
    try:
        server.disconnect(sid, namespace=NAMESPACE)
    finally:
        if eio_sid is not None:
            close_transport(server.eio, eio_sid)


class LiveConnections:
    """This process's authenticated connections, by Socket.IO sid (thread-safe)."""

    SWEEP_SECONDS = 0.25

    def __init__(self):
        self._by_sid: dict[str, Live] = {}
        self._lock = threading.Lock()
        self._server = None
        self._sweeper = Sweeper(self._close_expired, self.SWEEP_SECONDS, "token-expiry")

    def add(self, sid: str, live: Live) -> None:
        with self._lock:
            self._by_sid[sid] = live

    def remove(self, sid: str) -> Live | None:
        with self._lock:
            return self._by_sid.pop(sid, None)

    def get(self, sid: str) -> Live | None:
        return self._by_sid.get(sid)

    def of_user(self, user_id: int) -> list[str]:
        with self._lock:
            return [sid for sid, live in self._by_sid.items() if live.user_id == user_id]

    def users(self) -> set[int]:
        with self._lock:
            return {live.user_id for live in self._by_sid.values()}

    def expired(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        with self._lock:
            return [sid for sid, live in self._by_sid.items() if live.expires_at <= now]

    def ensure_sweeper(self, server) -> None:
        """Start the expiry sweeper of this process once (``server``: python-socketio Server)."""
        self._server = server
        self._sweeper.ensure_started(server)

    def _close_expired(self) -> None:
        for sid in self.expired():
            log.info("realtime: closing %s: its access token expired", sid)
            self.remove(sid)
            try:
                close(self._server, sid)
            except Exception:  # noqa: BLE001 - it may have closed meanwhile
                log.debug("realtime: closing %s failed", sid, exc_info=True)


def install(app: Flask, server, live: LiveConnections) -> None:
    """Re-check connections when the hot cache says users changed (``server``: the
    python-socketio Server of ``app``). The checks run in a background task: the
    listener is called from a commit or from the subscriber and must not block."""

    def on_invalidation(message: dict) -> None:
        if USERS not in message:
            return
        keys = message[USERS]
        users = live.users() if keys is None else {int(k) for k in keys} & live.users()
        if users:
            server.start_background_task(recheck_users, app, server, live, sorted(users))

    hot_state(app).listen(on_invalidation)


def recheck_users(app: Flask, server, live: LiveConnections, user_ids: list[int]) -> None:
    """Disconnect the connections of ``user_ids`` whose session is revoked or whose user
    is inactive; for the others, leave the ``task:<id>`` rooms of tasks they no longer see."""
    from tasktracker.auth.tokens import session_user
    from tasktracker.extensions import db
    from tasktracker.realtime.emitter import drop_invisible_task_rooms
    from tasktracker.tokens.services import authenticate as authenticate_pat

    with app.app_context():
        try:
            for user_id in user_ids:
                keep = []
                for sid in live.of_user(user_id):
                    entry = live.get(sid)
                    if entry is None:
                        continue
                    if entry.pat is not None:
                        found = authenticate_pat(entry.pat)
                        user = found[1] if found is not None and found[0].user_id == user_id else None
                    else:
                        user = session_user(entry.auth_sid, user_id)
                    if user is None or not user.active:
                        log.info("realtime: closing %s of user %s: session revoked or user inactive",
                                 sid, user_id)
                        live.remove(sid)
                        try:
                            close(server, sid)
                        except Exception:  # noqa: BLE001 - it may have closed meanwhile
                            log.debug("realtime: closing %s failed", sid, exc_info=True)
                    else:
                        keep.append(sid)
                if keep:
                    drop_invisible_task_rooms(app, server.manager, user_id, keep)
        except Exception:  # noqa: BLE001 - the TTL-bounded checks of later requests remain
            log.exception("realtime: re-checking users %s failed", user_ids)
        finally:
            db.session.remove()
