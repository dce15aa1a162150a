"""Test support for tasktracker.mail: a real SMTP server (aiosmtpd) on 127.0.0.1 that
records what it received and can answer with scripted replies, and helpers that
make users, tasks and notifications."""

from __future__ import annotations

import asyncio
import email
import re
import socket
import threading
import time
from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from urllib.parse import parse_qs, urlsplit

from aiosmtpd.controller import Controller

from tasktracker.events.models import Event
from tasktracker.extensions import db
from tasktracker.mail.config import MailConfig
from tasktracker.notifications.models import Notification


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """aiosmtpd handler: records accepted messages; ``replies`` (a list) scripts the
    answers to DATA, one per message (then ``250 OK``); ``delay`` seconds before
    answering (a slow server)."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []
        self.replies: list[str] = []
        self.answered: list[str] = []
        self.delay = 0.0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            reply = self.replies.pop(0) if self.replies else "250 OK"
            self.answered.append(reply)
            if reply.startswith("250"):
                self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
        return reply

    @property
    def messages(self) -> list[EmailMessage]:
        with self.lock:
            raw = [r[2] for r in self.received]
        return [email.message_from_bytes(b, policy=default_policy) for b in raw]


class SMTPServer:
    """A real aiosmtpd server on 127.0.0.1:``port`` (start/stop at will: a server that
    is down, then up, on the same port)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.handler = Recorder()
        self.controller: Controller | None = None

    def start(self) -> SMTPServer:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def wait_for(self, count: int, timeout: float = 10.0) -> list[EmailMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.handler.received) < count:
            time.sleep(0.02)
        return self.handler.messages


def mail_config(app, port: int | None, **overrides) -> MailConfig:
    """The app's mail settings pointed at 127.0.0.1:``port`` (None: the file transport)."""
    values = {**app.config, "MAIL_SERVER": "127.0.0.1" if port else "", "MAIL_PORT": port or 0,
              "MAIL_DEFAULT_SENDER": "TaskTracker <no-reply@tasktracker.test>",
              "PUBLIC_BASE_URL": "https://tasks.example.com", "MAIL_TIMEOUT_SECONDS": 5.0, **overrides}
    return MailConfig.from_mapping(values)


def parts(message: EmailMessage) -> tuple[str, str]:
    """(text, html) bodies of a multipart/alternative message."""
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


def link_token(text: str, path: str) -> str:
    """The ``token`` query parameter of the first link to ``path`` in ``text``."""
    for url in re.findall(r"https?://[^\s\"'<>]+", text):
        split = urlsplit(url.replace("&amp;", "&"))
        if split.path == path:
            return parse_qs(split.query)["token"][0]
    raise AssertionError(f"no link to {path} in {text!r}")


def add_notification(user, type_: str, message: str, *, created_at: datetime, task=None,
                     read: bool = False) -> Notification:
    """A committed notification (and the event it comes from) for ``user``."""
    event = Event(type="test.event", actor_id=None, task_id=task.id if task else None, payload={},
                  created_at=created_at, dispatched_at=created_at)
    db.session.add(event)
    db.session.flush()
    notification = Notification(user_id=user.id, event_seq=event.seq, type=type_, message=message,
                                task_id=task.id if task else None, data={}, created_at=created_at,
                                read_at=created_at if read else None)
    db.session.add(notification)
    db.session.commit()
    return notification
