"""Socket.IO: connect/auth, rooms, presence and :func:`emit` (DESIGN.md)."""

from flask import Flask

from tasktracker.extensions import socketio


def init_socketio(app: Flask) -> None:
    """Bind Flask-SocketIO with an explicit ``async_mode`` (never eventlet)."""
    socketio.init_app(app, async_mode=app.config["SOCKETIO_ASYNC_MODE"],
                      message_queue=app.config["SOCKETIO_MESSAGE_QUEUE"] or None,
                      cors_allowed_origins=app.config["CORS_ORIGINS"] or [])
