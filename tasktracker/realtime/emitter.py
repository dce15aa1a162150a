"""Sending Socket.IO events and moving connections between rooms, from any process.

Only this module decides whether an emit is local or goes through the message
queue (DESIGN.md, "Modes"):

- embedded mode (no ``SOCKETIO_MESSAGE_QUEUE``): the app's own Socket.IO server;
- a process that serves Socket.IO connections (its pub/sub manager has been
  initialised by a first connection): the app's server, which delivers to its
  own connections and publishes for the other servers;
- any other process (Celery worker, beat, CLI, or a web process before its first
  connection): a write-only manager on the queue, one per process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable

from flask import Flask, current_app, has_app_context

from tasktracker.extensions import socketio
from tasktracker.realtime import queue
from tasktracker.realtime.sessions import LiveConnections
from tasktracker.realtime.services import task_room, team_ids_of, team_room, touch_last_seen, user_room

log = logging.getLogger(__name__)

NAMESPACE = "/"

_last_app: Flask | None = None  # for calls without an app context


class RealtimeState:
    """Per-app real-time state: the presence store, queue settings and the heartbeat."""

    def __init__(self, app: Flask, presence, queue_url: str | None, channel: str):
        self.app = app
        self.presence = presence
        self.queue_url = queue_url
        self.channel = channel
        self.server = None
        self.guard = None  # realtime.limits.ConnectionGuard of a process serving Socket.IO
        self.live = LiveConnections()  # authenticated connections of this process
        self._touched: dict[int, float] = {}  # user id -> monotonic time of our last_seen_at write
        self._heartbeat_pid: int | None = None
        self._lock = threading.Lock()

    #: A user's ``last_seen_at`` is written at most this often per process on connect and
    #: disconnect, except when their last connection closes (what presence shows).
    TOUCH_INTERVAL_SECONDS = 30.0

    def touch_last_seen(self, user_id: int, *, force: bool = False) -> None:
        """:func:`services.touch_last_seen`, skipped when this process wrote it for the user
        less than :data:`TOUCH_INTERVAL_SECONDS` ago unless ``force``: many tabs, or
        thousands of reconnecting clients, would otherwise cost an UPDATE of the same
        row and a pooled connection per connect and disconnect (bench: 10,000 sockets
        exhausted PostgreSQL's connections)."""
        now = time.monotonic()
        last = self._touched.get(user_id)
        if not force and last is not None and now - last < self.TOUCH_INTERVAL_SECONDS:
            return
        touch_last_seen(user_id)
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched[user_id] = now

    def forget_touches(self) -> None:
        """Forget the write times (tests reset the database under a running app)."""
        self._touched.clear()

    def ensure_heartbeat(self) -> None:
        """Start this process's presence heartbeat (Redis store only), once per process."""
        if not hasattr(self.presence, "redis"):
            return
        pid = os.getpid()
        if self._heartbeat_pid == pid:
            return
        with self._lock:
            if self._heartbeat_pid == pid:
                return
            self._heartbeat_pid = pid
            socketio.start_background_task(self._heartbeat_loop)

    def _heartbeat_loop(self) -> None:
        interval = float(self.app.config["PRESENCE_HEARTBEAT_SECONDS"])
        while True:
            socketio.sleep(interval)
            try:
                self.heartbeat_once()
            except Exception:  # noqa: BLE001 - keep beating; Redis may come back
                log.exception("realtime: presence heartbeat failed")

    def heartbeat_once(self) -> tuple[list[int], list[int]]:
        """One heartbeat; announces presence changes it discovered (dead servers)."""
        back, offline = self.presence.heartbeat()
        if back or offline:
            with self.app.app_context():
                for user_id in offline:
                    touch_last_seen(user_id)
                    broadcast_presence(user_id, False)
                for user_id in back:
                    broadcast_presence(user_id, True)
        return back, offline


def get_state(app: Flask | None = None) -> RealtimeState:
    """The :class:`RealtimeState` of ``app`` (default: the current app)."""
    app = app or _current_app()
    return app.extensions["tt_realtime"]


def _current_app() -> Flask:
    if has_app_context():
        return current_app._get_current_object()
    if _last_app is None:
        raise RuntimeError("realtime: no app (call init_socketio first)")
    return _last_app


def serves_sockets() -> bool:
    """True if this process has served a Socket.IO connection (its manager is running)."""
    server = socketio.server
    return bool(server is not None and server.manager_initialized)


def _room_list(rooms) -> list[str]:
    if isinstance(rooms, str):
        rooms = [rooms]
    out: list[str] = []
    for room in rooms or ():
        if isinstance(room, str) and room and room not in out:
            out.append(room)
    return out


def emit(event: str, data: dict, rooms: Iterable[str]) -> None:
    """Send ``event`` with ``data`` to the union of ``rooms``; each connection gets it once.

    ``rooms`` are names such as ``"task:7"``, ``"team:3"``, ``"user:12"``; an
    empty list sends nothing (never a broadcast). python-socketio dedupes a list
    of rooms per connection (``Manager.get_participants`` merges them by sid),
    also when the list travels through the message queue. Works in the web
    process and in processes without a Socket.IO server (see the module doc).
    Never raises: errors (unserialisable data, broker down) are logged.
    """
    try:
        targets = _room_list(rooms)
        if not targets:
            return
        to = targets if len(targets) > 1 else targets[0]
        state = get_state()
        if not state.queue_url or serves_sockets():
            socketio.emit(event, data, to=to, namespace=NAMESPACE)
        else:
            queue.write_only_manager(state.queue_url, state.channel).emit(
                event, data, namespace=NAMESPACE, room=to)
    except Exception:  # noqa: BLE001 - the caller (a request, a fan-out job) must not fail
        log.exception("realtime: emit %r to %r failed", event, rooms)


def broadcast_presence(user_id: int, online: bool, team_ids: list[int] | None = None) -> None:
    """``presence:update {user_id, online}`` to ``team:<id>`` of each of the user's teams."""
    if team_ids is None:
        team_ids = team_ids_of(user_id)
    emit("presence:update", {"user_id": user_id, "online": online}, [team_room(t) for t in team_ids])


def sync_membership(user_id: int, team_id: int, joined: bool) -> None:
    """Make the user's live connections, in every server process, join (``joined``) or
    leave room ``team:<team_id>``.

    Call it after the membership change is committed. This process applies it
    to its own connections at once; with a message queue, a control message
    (``tasktracker:membership``) makes every other server process do the same
    to its connections of ``user:<user_id>``. On leave, each server also drops
    the user's ``task:<id>`` subscriptions of tasks they can no longer see.
    Never raises: errors are logged.
    """
    try:
        _control({"user_id": int(user_id), "team_id": int(team_id), "joined": bool(joined)})
    except Exception:  # noqa: BLE001
        log.exception("realtime: sync_membership(%r, %r, %r) failed", user_id, team_id, joined)


def recheck_task_room(task_id: int) -> None:
    """Make every server process drop, from room ``task:<task_id>``, the connections
    whose user no longer sees the task (unassigned, moved out of their team). Call it
    after the change is committed and before emitting its event: the control message
    travels ahead of the emit on the same queue. Never raises: errors are logged."""
    try:
        _control({"kind": "task", "task_id": int(task_id)})
    except Exception:  # noqa: BLE001
        log.exception("realtime: recheck_task_room(%r) failed", task_id)


def _control(message: dict) -> None:
    """Apply a control message to this process's connections, then to every other
    server process's through the message queue (if any)."""
    app = _current_app()
    state = get_state(app)
    apply_control(app, message)
    if state.queue_url:
        if serves_sockets() and isinstance(socketio.server.manager, queue.ControlMixin):
            socketio.server.manager.publish_control(message)
        else:
            queue.write_only_manager(state.queue_url, state.channel).publish_control(message)


def apply_control(app: Flask, message: dict) -> None:
    """Apply a control message (membership or task re-check) to this process's connections."""
    if message.get("kind") == "task":
        apply_task_recheck(app, message)
    else:
        apply_membership(app, message)


def apply_task_recheck(app: Flask, message: dict) -> None:
    """Leave ``task:<id>`` for this process's connections whose user cannot see the task."""
    server = socketio.server
    if server is None or not server.manager_initialized:
        return
    task_id = int(message["task_id"])
    manager, room = server.manager, task_room(task_id)
    live = get_state(app).live
    by_user: dict[int, list[str]] = {}
    for sid, _ in list(manager.get_participants(NAMESPACE, room)):
        entry = live.get(sid)
        if entry is not None:
            by_user.setdefault(entry.user_id, []).append(sid)
    for user_id, sids in by_user.items():
        drop_invisible_task_rooms(app, manager, user_id, sids, only={task_id})


def apply_membership(app: Flask, message: dict) -> None:
    """Apply a membership message to this process's connections of the user."""
    server = socketio.server
    if server is None:
        return
    manager = server.manager
    user_id, room = int(message["user_id"]), team_room(int(message["team_id"]))
    sids = [sid for sid, _ in manager.get_participants(NAMESPACE, user_room(user_id))]
    for sid in sids:
        try:
            if message.get("joined"):
                manager.basic_enter_room(sid, NAMESPACE, room)
            else:
                manager.basic_leave_room(sid, NAMESPACE, room)
        except (KeyError, ValueError):  # the connection closed meanwhile
            continue
    if sids and not message.get("joined"):
        drop_invisible_task_rooms(app, manager, user_id, sids)


def drop_invisible_task_rooms(app: Flask, manager, user_id: int, sids: list[str],
                              only: set[int] | None = None) -> None:
    """Make connections ``sids`` of ``user_id`` leave the ``task:<id>`` rooms (of
    ``only``, default all they joined) of tasks the user no longer sees (database read)."""
    task_ids = set()
    for sid in sids:
        try:
            rooms = manager.get_rooms(sid, NAMESPACE)
        except (KeyError, ValueError):  # closed meanwhile
            continue
        for name in rooms:
            if isinstance(name, str) and name.startswith("task:") and name[5:].isdigit():
                task_ids.add(int(name[5:]))
    if only is not None:
        task_ids &= only
    if not task_ids:
        return
    if has_app_context() and current_app._get_current_object() is app:
        hidden = _hidden_tasks(user_id, task_ids)
    else:
        with app.app_context():
            hidden = _hidden_tasks(user_id, task_ids)
    for task_id in hidden:
        for sid in sids:
            manager.basic_leave_room(sid, NAMESPACE, task_room(task_id))


def _hidden_tasks(user_id: int, task_ids: set[int]) -> list[int]:
    from tasktracker.auth.models import User
    from tasktracker.extensions import db
    from tasktracker.tasks.models import Task
    from tasktracker.tasks.permissions import can_see

    user = db.session.get(User, user_id)
    hidden = []
    for task_id in sorted(task_ids):
        task = db.session.get(Task, task_id)
        if user is None or task is None or not can_see(user, task):
            hidden.append(task_id)
    return hidden


def control_handler(app: Flask):
    """The listener-thread callback for control messages from other processes."""

    def handle(message: dict) -> None:
        apply_control(app, message)

    return handle


def set_last_app(app: Flask) -> None:
    global _last_app
    _last_app = app
