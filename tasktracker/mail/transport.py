"""Handing a message to SMTP (stdlib ``smtplib``), or, with no ``MAIL_SERVER``, writing
it as an ``.eml`` file (the embedded default: ``make run`` shows what would be sent).

Failures are classified (RFC 5321 section 4.2.1: 4yz transient, 5yz permanent):

- :class:`TemporaryFailure`: connection refused or reset, timeouts, the server
  closing the connection, any 4yz reply, and authentication / STARTTLS problems
  (a configuration fault to fix, not a reason to drop the mail). Retry with backoff.
- :class:`PermanentFailure`: a 5yz reply to MAIL FROM, RCPT TO or DATA. Do not retry.

Both carry ``code`` (the SMTP reply code, or None) and ``reason`` (one line for the log
and the outbox row's ``error``).
"""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
import tempfile
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import getaddresses
from functools import cache

from tasktracker.mail.config import MailConfig

log = logging.getLogger(__name__)


class DeliveryError(Exception):
    """A message was not accepted. ``code``: the SMTP reply code or None; ``reason``: text."""

    temporary = True

    def __init__(self, reason: str, code: int | None = None):
        super().__init__(reason)
        self.reason = reason[:480]
        self.code = code


class TemporaryFailure(DeliveryError):
    """Try again later (connection trouble, 4yz, authentication/TLS setup)."""

    temporary = True


class PermanentFailure(DeliveryError):
    """The server rejected the message for good (5yz): do not retry."""

    temporary = False


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _from_reply(code: int, message, what: str) -> DeliveryError:
    reason = f"{what}: {code} {_text(message)}".strip()
    return (PermanentFailure if 500 <= code < 600 else TemporaryFailure)(reason, code)


def classify(exc: BaseException) -> DeliveryError:
    """The :class:`DeliveryError` for an exception raised while talking SMTP.

    ``SMTPRecipientsRefused`` is permanent only when every refusal is 5yz;
    ``SMTPResponseException`` (sender refused, DATA error, ...) by its code;
    authentication and STARTTLS errors and every ``OSError`` (refused, reset,
    timeout, TLS) are temporary.
    """
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        reason = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in exc.recipients.items())
        if codes and all(500 <= c < 600 for c in codes):
            return PermanentFailure(f"recipient refused: {reason}", codes[0])
        return TemporaryFailure(f"recipient refused: {reason}", codes[0] if codes else None)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return TemporaryFailure(f"authentication failed: {exc.smtp_code} {_text(exc.smtp_error)}", exc.smtp_code)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _from_reply(exc.smtp_code, exc.smtp_error, type(exc).__name__)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return TemporaryFailure(f"server does not support a required extension: {exc}")
    if isinstance(exc, (smtplib.SMTPException, OSError)):  # disconnects, refused, timeouts, TLS
        return TemporaryFailure(f"{type(exc).__name__}: {exc}")
    return TemporaryFailure(f"{type(exc).__name__}: {exc}")


class FileTransport:
    """Writes each message to ``<dir>/<UTC timestamp>-<id>.eml`` (atomically: a temporary
    file renamed into place) and logs one line. ``<id>`` is the Message-ID's left part."""

    def __init__(self, directory):
        self.directory = directory

    def send(self, message: EmailMessage) -> str:
        """Write ``message``; returns the file's path."""
        os.makedirs(self.directory, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        ident = re.sub(r"[^A-Za-z0-9._-]", "_", (message.get("Message-ID") or "").strip("<>").split("@")[0])
        path = os.path.join(self.directory, f"{stamp}-{ident or 'message'}.eml")
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
        os.replace(tmp, path)
        log.info("mail: MAIL_SERVER is empty; wrote %r to %s", message.get("Subject"), path)
        return path

    def close(self) -> None:
        pass


@cache
def _tls_context() -> ssl.SSLContext:
    """The process's client TLS context for SMTPS and STARTTLS (the system's CA store,
    hostname checks on). Built once: loading the CA store costs about 25 ms of CPU, and
    one context serves every connection."""
    return ssl.create_default_context()


class SMTPTransport:
    """One SMTP connection (``smtplib.SMTP`` or ``SMTP_SSL``), opened on the first
    :meth:`send` and reused by the next ones (a batch); dropped after a connection
    error so the next send reconnects. Not thread-safe: one per worker loop."""

    def __init__(self, config: MailConfig):
        self.config = config
        self._smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.use_ssl:
            smtp = smtplib.SMTP_SSL(c.server, c.port, timeout=c.timeout, context=_tls_context())
        else:
            smtp = smtplib.SMTP(c.server, c.port, timeout=c.timeout)
        try:
            smtp.ehlo()
            if c.use_tls:
                smtp.starttls(context=_tls_context())
                smtp.ehlo()
            if c.username:
                smtp.login(c.username, c.password)
        except BaseException:
            _quietly_close(smtp)
            raise
        return smtp

    def send(self, message: EmailMessage) -> None:
        """Hand ``message`` to the server (envelope: ``MAIL_DEFAULT_SENDER`` to the
        ``To`` addresses). Returns when the server answered 250 to the data.
        Raises :class:`TemporaryFailure` or :class:`PermanentFailure`."""
        recipients = [addr for _, addr in getaddresses(message.get_all("To", []))]
        try:
            if self._smtp is None:
                self._smtp = self._connect()
            refused = self._smtp.send_message(message, from_addr=self.config.sender_address,
                                              to_addrs=recipients)
        except BaseException as exc:
            error = classify(exc)
            # after a refused sender/recipient/data smtplib sent RSET and the connection
            # goes on; anything else (or 421: the server is closing) leaves it unusable
            if error.code == 421 or not isinstance(exc, (
                    smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
                self.close()  # the connection is in an unknown state: reconnect next time
            raise error from exc
        if refused:  # never with one recipient (it raises instead); kept for several
            raise classify(smtplib.SMTPRecipientsRefused(refused))

    def close(self) -> None:
        """QUIT (errors ignored) and forget the connection."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            _quietly_close(smtp)


def _quietly_close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except Exception:  # noqa: BLE001 - closing a broken connection
        try:
            smtp.close()
        except Exception:  # noqa: BLE001
            pass


def open_transport(config: MailConfig) -> FileTransport | SMTPTransport:
    """The transport for ``config``: :class:`FileTransport` when ``MAIL_SERVER`` is
    empty, else :class:`SMTPTransport`. Call ``close()`` when done."""
    if not config.server:
        return FileTransport(config.file_dir)
    return SMTPTransport(config)


def send(message: EmailMessage, config: MailConfig) -> None:
    """Send one message on a connection of its own (:func:`open_transport`).
    Raises :class:`TemporaryFailure` / :class:`PermanentFailure`."""
    transport = open_transport(config)
    try:
        transport.send(message)
    finally:
        transport.close()
