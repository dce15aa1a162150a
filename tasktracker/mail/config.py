"""Mail settings: the contract's ``MAIL_*`` and ``PUBLIC_BASE_URL`` plus the outbox's
tuning knobs, read from any mapping (``current_app.config``, a plain dict).

:func:`env_settings` reads them from the environment with their defaults; the
lead adds its result to :class:`tasktracker.config.Config` (``vars().update(...)``
or one line per setting) and names each one in the README table and
``.env.example``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent.parent

#: Every mail setting and its default (README configuration table, ``.env.example``).
DEFAULTS: dict[str, object] = {
    "MAIL_SERVER": "",                  # empty: write .eml files under MAIL_FILE_DIR
    "MAIL_PORT": 0,                     # 0: 465 with MAIL_USE_SSL, 587 with MAIL_USE_TLS, else 25
    "MAIL_USE_TLS": False,              # STARTTLS after connecting
    "MAIL_USE_SSL": False,              # implicit TLS (SMTPS)
    "MAIL_USERNAME": "",
    "MAIL_PASSWORD": "",
    "MAIL_DEFAULT_SENDER": "TaskTracker <no-reply@localhost>",
    "PUBLIC_BASE_URL": "http://localhost:5000",
    "MAIL_FILE_DIR": str(BASE_DIR / "instance" / "mail"),
    "MAIL_TIMEOUT_SECONDS": 10.0,       # connect and each SMTP command
    "MAIL_BATCH_SECONDS": 60.0,         # notifications of one user within this go in one message
    "MAIL_CLAIM_LEASE_SECONDS": 300.0,  # a claimed row is retried after this if its worker died
    "MAIL_RETRY_BASE_SECONDS": 30.0,    # backoff after a temporary failure: base * 2**(attempt-1)
    "MAIL_RETRY_MAX_SECONDS": 3600.0,   # ... at most this
    "MAIL_MAX_ATTEMPTS": 12,            # then the row is failed (about 8 hours of retries)
    "MAIL_SEND_CONCURRENCY": 4,         # Celery: deliver_mail tasks per mail scan (they split the due rows)
    "MAIL_RESET_URL": "{base}/reset-password?token={token}",
    "MAIL_VERIFY_URL": "{base}/verify-email?token={token}",
    "PASSWORD_RESET_TTL_SECONDS": 3600,
    "EMAIL_VERIFICATION_TTL_SECONDS": 48 * 3600,
    "INVITATIONS_REQUIRE_VERIFIED_EMAIL": False,
}


def _parse(raw: str, default: object) -> object:
    if isinstance(default, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def env_settings(environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The mail settings from ``environ`` (default ``os.environ``), typed like their
    defaults in :data:`DEFAULTS`. Raises ``ValueError`` for a malformed number."""
    environ = os.environ if environ is None else environ
    return {name: _parse(environ[name], default) if name in environ else default
            for name, default in DEFAULTS.items()}


@dataclass(frozen=True)
class MailConfig:
    """The mail settings as typed values. Build with :meth:`from_mapping`."""

    server: str
    port: int
    use_tls: bool
    use_ssl: bool
    username: str
    password: str
    default_sender: str
    public_base_url: str
    file_dir: Path
    timeout: float
    batch_seconds: float
    claim_lease_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    max_attempts: int
    reset_url: str
    verify_url: str
    password_reset_ttl: int
    verification_ttl: int
    secret_key: str

    @classmethod
    def from_mapping(cls, config: Mapping[str, object]) -> MailConfig:
        """Read the settings from ``config`` (e.g. ``current_app.config``); missing keys
        take :data:`DEFAULTS`. ``secret_key`` (signing unsubscribe tokens) is
        ``SECRET_KEY``. Raises ``ValueError`` when both TLS modes are on."""
        def get(name):
            value = config.get(name)
            return DEFAULTS[name] if value is None else value

        use_tls, use_ssl = bool(get("MAIL_USE_TLS")), bool(get("MAIL_USE_SSL"))
        if use_tls and use_ssl:
            raise ValueError("MAIL_USE_TLS (STARTTLS) and MAIL_USE_SSL (implicit TLS) exclude each other")
        port = int(get("MAIL_PORT")) or (465 if use_ssl else 587 if use_tls else 25)
        return cls(
            server=str(get("MAIL_SERVER") or ""), port=port, use_tls=use_tls, use_ssl=use_ssl,
            username=str(get("MAIL_USERNAME") or ""), password=str(get("MAIL_PASSWORD") or ""),
            default_sender=str(get("MAIL_DEFAULT_SENDER")),
            public_base_url=str(get("PUBLIC_BASE_URL")).rstrip("/"),
            file_dir=Path(str(get("MAIL_FILE_DIR"))), timeout=float(get("MAIL_TIMEOUT_SECONDS")),
            batch_seconds=float(get("MAIL_BATCH_SECONDS")),
            claim_lease_seconds=float(get("MAIL_CLAIM_LEASE_SECONDS")),
            retry_base_seconds=float(get("MAIL_RETRY_BASE_SECONDS")),
            retry_max_seconds=float(get("MAIL_RETRY_MAX_SECONDS")),
            max_attempts=int(get("MAIL_MAX_ATTEMPTS")),
            reset_url=str(get("MAIL_RESET_URL")), verify_url=str(get("MAIL_VERIFY_URL")),
            password_reset_ttl=int(get("PASSWORD_RESET_TTL_SECONDS")),
            verification_ttl=int(get("EMAIL_VERIFICATION_TTL_SECONDS")),
            secret_key=str(config.get("SECRET_KEY") or ""),
        )

    @property
    def sender_address(self) -> str:
        """The bare address of ``MAIL_DEFAULT_SENDER`` (the SMTP envelope sender)."""
        return parseaddr(self.default_sender)[1] or self.default_sender

    @property
    def message_id_domain(self) -> str:
        """The right-hand side of our ``Message-ID``s: the sender's domain, else the
        host of ``PUBLIC_BASE_URL``."""
        domain = self.sender_address.rpartition("@")[2]
        return domain or urlsplit(self.public_base_url).hostname or "localhost"


def current_mail_config() -> MailConfig:
    """:meth:`MailConfig.from_mapping` of the current Flask app's config."""
    from flask import current_app

    return MailConfig.from_mapping(current_app.config)
