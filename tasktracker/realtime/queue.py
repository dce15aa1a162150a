"""Socket.IO message-queue managers (several server processes, emitters without a server).

python-socketio's pub/sub managers (``KombuManager`` for ``amqp://``,
``RedisManager`` for ``redis://``) broadcast every emit on a fanout channel;
each server process delivers it to its own connections. This module adds:

- **control messages**: ``{"method": "tasktracker:membership", ...}`` published
  on the same channel. python-socketio's listener ignores unknown methods, so
  the subclasses intercept them in ``_listen`` and hand them to
  ``control_handler`` (set by :func:`tasktracker.realtime.init_socketio`). This is
  how a Celery worker, which knows no sids, makes every server move *its own*
  connections of ``user:<id>`` in or out of ``team:<id>``.
- a **publish lock**: kombu connections are not thread-safe and the manager
  shares one publisher connection between all request threads.
- **bounded retries**: kombu's ``Connection.ensure`` retries forever by default,
  which would block a request while the broker is down; here a publish gives up
  after a few quick retries (python-socketio then logs "giving up").
- :func:`write_only_manager`: one write-only manager per process (and per fork),
  for processes that serve no Socket.IO connections (Celery workers, CLI).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Callable

import socketio

log = logging.getLogger(__name__)

CONTROL_METHOD = "tasktracker:membership"


class ControlMixin:
    """Adds TaskTracker control messages and a publish lock to a pub/sub manager."""

    #: ``callable(message: dict)`` run in the listener thread for control messages
    #: published by *another* host (this host applies its own messages directly).
    control_handler: Callable[[dict], None] | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._publish_lock = threading.Lock()

    def publish_control(self, message: dict) -> None:
        """Publish a control message to every server process (never raises)."""
        self._publish({**message, "method": CONTROL_METHOD, "host_id": self.host_id})

    def _publish(self, data):
        with self._publish_lock:
            return super()._publish(data)

    def _listen(self):
        for message in super()._listen():
            data = message
            if not isinstance(data, dict):
                try:
                    data = json.loads(message)
                except (TypeError, ValueError):
                    data = None
            if isinstance(data, dict) and data.get("method") == CONTROL_METHOD:
                if data.get("host_id") != self.host_id and self.control_handler is not None:
                    try:
                        self.control_handler(data)
                    except Exception:  # noqa: BLE001 - the listener thread must survive
                        log.exception("realtime: control message failed: %r", data)
                continue
            yield message


class KombuManager(ControlMixin, socketio.KombuManager):
    """``amqp://`` (RabbitMQ through kombu) with control messages and bounded retries."""

    publish_max_retries = 2

    def _producer_publish(self, connection):
        producer = connection.Producer(exchange=self._exchange(), **self.producer_options)
        return connection.ensure(producer, producer.publish, max_retries=self.publish_max_retries,
                                 interval_start=0, interval_step=0.5, interval_max=1)


class RedisManager(ControlMixin, socketio.RedisManager):
    """``redis://`` pub/sub with control messages."""


def manager_class(url: str) -> type:
    """The manager class for a message-queue URL: Redis for ``redis://``/``rediss://``,
    kombu (RabbitMQ and other kombu transports) for anything else."""
    return RedisManager if url.startswith(("redis://", "rediss://")) else KombuManager


def make_manager(url: str, channel: str, *, write_only: bool = False):
    """A (possibly write-only) pub/sub manager on ``url`` / ``channel``."""
    return manager_class(url)(url, channel=channel, write_only=write_only)


_writers: dict[tuple, object] = {}
_writers_lock = threading.Lock()


def write_only_manager(url: str, channel: str):
    """The process's write-only manager for ``url``/``channel``, created once per
    process id (so a forked Celery child never reuses its parent's connection)."""
    key = (os.getpid(), url, channel)
    manager = _writers.get(key)
    if manager is None:
        with _writers_lock:
            manager = _writers.get(key)
            if manager is None:
                manager = _writers[key] = make_manager(url, channel, write_only=True)
    return manager
