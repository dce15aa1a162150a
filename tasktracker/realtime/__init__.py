"""Socket.IO: connect/auth, rooms, presence and :func:`emit` (DESIGN.md, api-contract.md
"Real time").

Public interface for the rest of the app (the notification fan-out, team services):

- :func:`emit` ``(event, data, rooms)``: send to the union of rooms, each connection once.
- :func:`sync_membership` ``(user_id, team_id, joined)``: move a user's live
  connections in every server process in or out of ``team:<id>``.
- :func:`recheck_task_room` ``(task_id)``: every server process drops from
  ``task:<id>`` the connections whose user no longer sees the task.

Rooms: ``user:<id>`` and ``team:<id>`` (joined at connect), ``task:<id>``
(``task:subscribe``). Handlers live in :mod:`tasktracker.realtime.handlers`,
presence in :mod:`tasktracker.realtime.presence`, queue plumbing in
:mod:`tasktracker.realtime.queue`.
"""

from __future__ import annotations

import logging

import socketio as _socketio
from flask import Flask

from tasktracker.extensions import socketio
from tasktracker.realtime.emitter import (  # noqa: F401 - public API
    emit, get_state, recheck_task_room, sync_membership,
)

log = logging.getLogger(__name__)

ASYNC_MODES = ("threading", "gevent")
ROLES = ("all", "api", "gateway")


def init_socketio(app: Flask) -> None:
    """Bind Flask-SocketIO to ``app``.

    - ``async_mode`` from ``SOCKETIO_ASYNC_MODE`` (``threading`` or ``gevent``;
      anything else, eventlet included, raises ``ValueError``).
    - ``SOCKETIO_MESSAGE_QUEUE`` (``amqp://`` via kombu, or ``redis://``) on channel
      ``SOCKETIO_CHANNEL`` when set; none in embedded mode. The client manager is
      always passed explicitly, so re-initialising the shared ``socketio`` object
      for another app never inherits a previous queue.
    - CORS: ``CORS_ORIGINS`` when set, else same origin only.
    - Engine.IO ``transports`` from ``SOCKETIO_TRANSPORTS`` (``polling`` and/or
      ``websocket``; anything else raises ``ValueError``). A transport left out is
      refused with a 400 ("Invalid transport"). Always passed, so a previous app's
      choice is never inherited either.
    - presence in Redis (``REDIS_URL``) or in memory.
    - ``TASKTRACKER_ROLE=api`` (a REST API process): no Socket.IO server is mounted
      (``/socket.io/`` is a 404 there; emits go through the message queue, which
      the gateways read); ``all`` (embedded) and ``gateway`` serve Socket.IO.
    - connection limits (:mod:`tasktracker.realtime.limits`):
      ``SOCKETIO_CONNECT_TIMEOUT_SECONDS`` and ``SOCKETIO_MAX_CONNECTIONS_PER_IP``.
    """
    from tasktracker.config import socketio_transports
    from tasktracker.realtime import handlers  # noqa: F401 - registers handlers before init_app
    from tasktracker.realtime import emitter, queue
    from tasktracker.realtime.presence import MemoryPresence, RedisPresence

    async_mode = app.config["SOCKETIO_ASYNC_MODE"]
    if async_mode not in ASYNC_MODES:
        raise ValueError(f"SOCKETIO_ASYNC_MODE must be one of {ASYNC_MODES}, not {async_mode!r}")
    transports = socketio_transports(app.config["SOCKETIO_TRANSPORTS"])
    url = app.config["SOCKETIO_MESSAGE_QUEUE"] or None
    channel = app.config["SOCKETIO_CHANNEL"]
    if url:
        manager = queue.make_manager(url, channel)
        manager.control_handler = emitter.control_handler(app)
    else:
        manager = _socketio.Manager()
    role = app.config["TASKTRACKER_ROLE"]
    if role not in ROLES:
        raise ValueError(f"TASKTRACKER_ROLE must be one of {ROLES}, not {role!r}")
    guard = None
    if role == "api":
        if not url:
            raise ValueError("TASKTRACKER_ROLE=api needs SOCKETIO_MESSAGE_QUEUE: its events reach "
                             "the clients through the gateways")
        socketio.server = None  # never an Engine.IO endpoint here (a previous app's is dropped)
    else:
        socketio.init_app(app, async_mode=async_mode, client_manager=manager, transports=transports,
                          cors_allowed_origins=app.config["CORS_ORIGINS"] or None)
        from tasktracker.realtime.limits import ConnectionGuard

        guard = ConnectionGuard(socketio.server, app.config["SOCKETIO_CONNECT_TIMEOUT_SECONDS"],
                                app.config["SOCKETIO_MAX_CONNECTIONS_PER_IP"])

    if app.config["REDIS_URL"]:
        presence = RedisPresence.from_url(app.config["REDIS_URL"], app.config["PRESENCE_KEY_PREFIX"],
                                          app.config["PRESENCE_SERVER_TTL_SECONDS"])
    else:
        if url:
            log.warning("realtime: SOCKETIO_MESSAGE_QUEUE is set but REDIS_URL is not: presence "
                        "is tracked per process only")
        presence = MemoryPresence()
    app.extensions["tt_realtime"] = state = emitter.RealtimeState(app, presence, url, channel)
    state.server = socketio.server  # the Socket.IO server bound for this app (None: api role)
    state.guard = guard
    if socketio.server is not None:  # connections follow their session (realtime/sessions.py)
        from tasktracker.realtime import sessions

        sessions.install(app, socketio.server, state.live)
    emitter.set_last_app(app)
