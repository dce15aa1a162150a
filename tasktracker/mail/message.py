"""Building the ``email.message.EmailMessage`` of an outbox row (stdlib ``email``: no
hand-made MIME).

Every message is ``multipart/alternative`` (text/plain then text/html, UTF-8) with
``From`` (``MAIL_DEFAULT_SENDER``), ``To``, ``Subject``, ``Date`` (RFC 5322),
``Message-ID``, ``Auto-Submitted: auto-generated`` (RFC 3834), and the RFC 8058
one-click pair ``List-Unsubscribe: <PUBLIC_BASE_URL/api/email/unsubscribe?token=...>``
and ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. (RFC 8058 section 4 also
wants a DKIM signature covering both headers: that is the outgoing MTA's job.)
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.policy import default as default_policy
from email.utils import format_datetime
from functools import lru_cache
from urllib.parse import quote

from tasktracker.mail.config import MailConfig

UNSUBSCRIBE_PATH = "/api/email/unsubscribe"

#: RFC 5322's hard limit instead of its 78-character recommendation: with 78 the stdlib
#: folds a long Subject right after ``Subject:``, and readers then show a leading space.
POLICY = default_policy.clone(max_line_length=998)


@lru_cache(maxsize=32)
def _header(name: str, value: str):
    """The parsed header ``name: value``, made once per process: ``EmailMessage`` parses
    every header value it is given (about 0.1 ms each) but keeps a header object made
    by its policy as it is. For the values every message shares."""
    return POLICY.header_factory(name, value)


def message_id_for(email_id: int, config: MailConfig) -> str:
    """The ``Message-ID`` of outbox row ``email_id``: stable, so every retry (and a
    re-send after a crash) carries the same one and receivers can drop the copy."""
    return f"<tasktracker.outbox.{int(email_id)}@{config.message_id_domain}>"


def unsubscribe_url(token: str, config: MailConfig) -> str:
    """``PUBLIC_BASE_URL/api/email/unsubscribe?token=<token>`` (the RFC 8058 target)."""
    return f"{config.public_base_url}{UNSUBSCRIBE_PATH}?token={quote(token, safe='')}"


def build_message(*, to: str, to_name: str = "", subject: str, text: str, html: str, message_id: str,
                  date: datetime, config: MailConfig, unsubscribe: str | None) -> EmailMessage:
    """The message: ``to`` (address) with display name ``to_name``, ``subject``, the two
    bodies, ``message_id`` (``<...>``), ``date`` (aware), and ``unsubscribe`` (the full
    one-click URL, or None for no List-Unsubscribe headers). Raises ``ValueError`` for
    a naive ``date``, ``ValueError`` or ``email.errors.HeaderParseError`` for an
    address the ``email`` package refuses."""
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    message = EmailMessage(policy=POLICY)
    message["From"] = _header("From", config.default_sender)
    message["To"] = Address(display_name=to_name, addr_spec=to) if to_name else to
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = _header("Auto-Submitted", "auto-generated")
    if unsubscribe:
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = _header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    message["MIME-Version"] = _header("MIME-Version", "1.0")
    # a boundary derived from the content (which cannot contain its own digest), not a
    # random one: a retry or a re-send after a crash is byte-identical. Set with the
    # Content-Type, the parts attached under it: set_content + add_alternative +
    # set_boundary would parse the same headers three times over
    digest = hashlib.sha256(f"{message_id}\0{text}\0{html}".encode()).hexdigest()[:40]
    message["Content-Type"] = f'multipart/alternative; boundary="=_tt_{digest}"'
    for body, subtype in ((text, "plain"), (html, "html")):
        part = MIMEPart(policy=POLICY)
        part.set_content(body, subtype=subtype, charset="utf-8")
        message.attach(part)
    return message
