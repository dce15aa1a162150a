"""Socket.IO event handlers on namespace ``/`` (api-contract.md, "Real time").

- ``connect`` with ``auth={"token": "<access_token>", "last_seq"?: int}``: refused
  (``connect_error`` with ``{"message", "data": {"code"}}``) for an expired token
  (``token_expired``, contract v1.1), a missing, malformed, revoked or refresh
  token and an inactive user (``invalid_token``), for a bad ``last_seq``
  (``invalid_last_seq``) and when a dependency is down (``unavailable``). Accepted:
  joins ``user:<id>`` and ``team:<id>`` of each team, records presence (``presence:update`` to the teams
  on the first connection), updates ``last_seen_at``, and replays the caller's
  notifications with ``event_seq > last_seq`` as ``notification:new``, in order
  (at most ``REALTIME_REPLAY_LIMIT``), to this connection only.
- ``task:subscribe {task_id}`` -> ack ``{ok: true}`` and joins ``task:<id>`` if the
  user may see the task, else ``{ok: false, error: "not_found"}``; a bad payload
  acks ``{ok: false, error: "invalid"}``.
- ``task:unsubscribe {task_id}`` -> leaves ``task:<id>``, ack ``{ok: true}``.
- ``disconnect``: presence (``presence:update`` offline after the last
  connection) and ``last_seen_at``.
- ``connect``/``disconnect`` events *emitted* by a connected client are ignored.
- The connection is closed by the server at its token's expiry, and when its session
  is revoked or its user deactivated, in every process (:mod:`tasktracker.realtime.sessions`).
"""

from __future__ import annotations

import logging

from flask import current_app, has_request_context, request
from flask_jwt_extended import decode_token
from flask_socketio import ConnectionRefusedError, join_room, leave_room
from jwt import ExpiredSignatureError

from tasktracker.auth.tokens import session_user, user_from_claims
from tasktracker.tokens.services import authenticate as authenticate_pat, looks_like_pat
from tasktracker.core.db import MAX_ID
from tasktracker.core.errors import NotFound
from tasktracker.extensions import db, socketio
from tasktracker.realtime import services
from tasktracker.realtime.emitter import NAMESPACE, broadcast_presence, get_state
from tasktracker.realtime.sessions import Live

log = logging.getLogger(__name__)


def _refuse(code: str, message: str):
    raise ConnectionRefusedError(message, {"code": code})


def _registered() -> bool:
    """Whether this request's connection already completed its authenticated connect."""
    return has_request_context() and get_state().live.get(request.sid) is not None


@socketio.on("connect")
def on_connect(auth=None):
    if _registered():
        return None  # a "connect" event emitted by a connected client: ignored (contract v1.1)
    try:
        return _connect(auth)
    except ConnectionRefusedError:
        raise
    except Exception:  # noqa: BLE001 - never leave a client hanging on an error
        log.exception("realtime: connect failed")
        db.session.rollback()
        _refuse("unavailable", "Service unavailable, retry later.")


def _parse_last_seq(auth: dict) -> int | None:
    last_seq = auth.get("last_seq")
    if last_seq is None:
        return None
    if isinstance(last_seq, str) and last_seq.isdigit():
        last_seq = int(last_seq)
    if isinstance(last_seq, bool) or not isinstance(last_seq, int) or not 0 <= last_seq < 2**63:
        _refuse("invalid_last_seq", "last_seq must be a non-negative integer.")
    return last_seq


def _connect(auth) -> None:
    if not isinstance(auth, dict) or not isinstance(auth.get("token"), str) or not auth["token"]:
        _refuse("missing_token", 'Authentication required: auth={"token": "<access_token>"}.')
    last_seq = _parse_last_seq(auth)
    pat = auth["token"] if looks_like_pat(auth["token"]) else None
    if pat is not None:  # a personal access token (api-contract.md v1.1), any scope
        found = authenticate_pat(pat)
        user = found[1] if found is not None else None
        claims = {"sid": "", "exp": found[0].expires_at.timestamp()} if found is not None else {}
    else:
        try:
            claims = decode_token(auth["token"])
        except ExpiredSignatureError:
            _refuse("token_expired", "Token has expired: refresh it and reconnect.")
        except Exception:  # noqa: BLE001 - any other decoding failure: an invalid token
            _refuse("invalid_token", "Invalid, expired or revoked token, or inactive user.")
        user = user_from_claims(claims)
    if user is None:
        db.session.rollback()
        _refuse("invalid_token", "Invalid, expired or revoked token, or inactive user.")
    user_id, sid = user.id, request.sid
    team_ids = services.team_ids_of(user_id)
    join_room(services.user_room(user_id))
    for team_id in team_ids:
        join_room(services.team_room(team_id))
    state = get_state()
    state.touch_last_seen(user_id)
    if state.guard is not None:
        state.guard.authenticated(socketio.server.manager.eio_sid_from_sid(sid, NAMESPACE))
    state.live.add(sid, Live(user_id, claims["sid"], float(claims["exp"]), pat))
    state.live.ensure_sweeper(socketio.server)
    try:
        state.ensure_heartbeat()
        if state.presence.add(user_id, sid):
            broadcast_presence(user_id, True, team_ids)
    except Exception:  # noqa: BLE001 - presence is best effort; the connection stays
        log.exception("realtime: presence add failed for user %s", user_id)

    if last_seq is not None:
        limit = current_app.config["REALTIME_REPLAY_LIMIT"]
        for notification in services.missed_notifications(user_id, last_seq, limit):
            socketio.emit("notification:new", services.notification_payload(notification),
                          to=sid, namespace=NAMESPACE, ignore_queue=True)
    db.session.commit()


@socketio.on("disconnect")
def on_disconnect(reason=None, *_extra):
    if socketio.server.manager.is_connected(request.sid, NAMESPACE):
        # python-socketio marks a closing connection disconnected before this handler
        # runs: still connected means a client emitted "disconnect" itself (ignored)
        return
    get_state().live.remove(request.sid)
    try:
        user_id, went_offline = get_state().presence.remove(request.sid)
    except Exception:  # noqa: BLE001
        log.exception("realtime: presence remove failed")
        return
    if user_id is None:
        return
    try:
        get_state().touch_last_seen(user_id, force=went_offline)
        if went_offline:
            broadcast_presence(user_id, False)
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("realtime: disconnect bookkeeping failed for user %s", user_id)


def _task_id(data) -> int | None:
    if not isinstance(data, dict):
        return None
    task_id = data.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, int) or not 0 < task_id <= MAX_ID:
        return None
    return task_id


def _entry_user(entry):
    """The user of a live connection if its credential still holds (login session, or
    personal access token), else None."""
    if entry is None:
        return None
    if entry.pat is not None:
        found = authenticate_pat(entry.pat)
        return found[1] if found is not None and found[0].user_id == entry.user_id else None
    return session_user(entry.auth_sid, entry.user_id)


@socketio.on("task:subscribe")
def on_task_subscribe(data=None, *_extra):
    task_id = _task_id(data)
    if task_id is None:
        return {"ok": False, "error": "invalid"}
    try:
        entry = get_state().live.get(request.sid)
        user = _entry_user(entry)
        if user is None or not user.active:
            return {"ok": False, "error": "unauthorized"}
        from tasktracker.tasks.permissions import get_visible_task

        get_visible_task(user, task_id, collections=False)
    except NotFound:
        return {"ok": False, "error": "not_found"}
    except Exception:  # noqa: BLE001
        db.session.rollback()
        log.exception("realtime: task:subscribe failed")
        return {"ok": False, "error": "unavailable"}
    finally:
        db.session.rollback()  # read-only: end the transaction
    join_room(services.task_room(task_id))
    return {"ok": True}


@socketio.on("task:unsubscribe")
def on_task_unsubscribe(data=None, *_extra):
    task_id = _task_id(data)
    if task_id is None:
        return {"ok": False, "error": "invalid"}
    leave_room(services.task_room(task_id))
    return {"ok": True}


@socketio.on_error_default
def on_error(exc):
    """Any other handler error: logged, the client gets ``{ok: false, error: "internal"}``."""
    db.session.rollback()
    log.error("realtime: handler error: %r", exc, exc_info=exc)
    return {"ok": False, "error": "internal"}
