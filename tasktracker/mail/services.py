"""The email endpoints' rules (api-contract v1.1 "Email"): password reset, address
verification, notification settings, one-click unsubscribe. Each function is one
transaction and commits; the slow parts (looking the address up, tokens, SMTP) run
in the workers (:mod:`tasktracker.mail.work`, queued through :mod:`.dispatch`).
"""

from __future__ import annotations

from uuid import uuid4

from flask import current_app

from tasktracker.auth.models import User
from tasktracker.auth.services import hash_password
from tasktracker.auth.tokens import revoke_sessions
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.mail import dispatch, settings, tokens, unsubscribe
from tasktracker.mail.models import TokenPurpose


def request_password_reset(email: str) -> None:
    """``POST /api/auth/password-reset``: queue the reset job for ``email`` under a new
    request id and return. No database access here: the answer (202) and its timing
    are the same for a known and an unknown address; the job
    (:func:`tasktracker.mail.work.password_reset_job`) looks the address up."""
    dispatch.submit("password_reset", email, uuid4().hex)


def confirm_password_reset(token: str, password: str) -> int:
    """``POST /api/auth/password-reset/confirm``: consume the reset ``token`` (single use,
    1 h; every other reset token of the user is voided), set the new password and
    revoke every session of the user (their access and refresh tokens answer 401;
    their sockets are closed through the hot cache's ``USERS`` invalidation), in one
    transaction. Returns the user id. Raises
    :class:`tasktracker.mail.tokens.InvalidToken` (422 ``invalid_reset_token``) for a
    used, expired, unknown token or one of a deactivated account."""
    consumed = tokens.consume_token(token, TokenPurpose.PASSWORD_RESET, utcnow())
    user = db.session.get(User, consumed.user_id)
    if user is None or not user.active:
        db.session.rollback()
        raise tokens.InvalidToken(tokens._CODES[TokenPurpose.PASSWORD_RESET][1], code="invalid_reset_token")
    user.password_hash = hash_password(password)
    revoke_sessions(user.id)
    db.session.commit()
    return user.id


def request_verification(user: User) -> None:
    """``POST /api/auth/verify-email/request``: queue a verification message to the
    caller's current address (:func:`tasktracker.mail.work.verification_job`)."""
    dispatch.submit("verification", user.id, uuid4().hex)


def verify_email(token: str, caller: User | None) -> int:
    """``POST /api/auth/verify-email``: consume the verification ``token`` and set the
    user's ``email_verified``. The token verifies only the address it was issued for
    (a changed email voids it) and, when the request is authenticated, only the
    caller's own account. Returns the user id. Raises
    :class:`tasktracker.mail.tokens.InvalidToken` (422 ``invalid_verification_token``)."""
    consumed = tokens.consume_token(token, TokenPurpose.VERIFY_EMAIL, utcnow(),
                                    user_id=caller.id if caller is not None else None)
    user = db.session.get(User, consumed.user_id)
    user.email_verified = True
    db.session.commit()
    return user.id


def get_notification_settings(user: User) -> dict:
    """The caller's settings document (:func:`tasktracker.mail.settings.effective`)."""
    return settings.get_settings(user.id)


def update_notification_settings(user: User, data: dict) -> dict:
    """Apply a PATCH to the caller's settings (row-locked, created on first change) and
    commit; returns the new document. 422 (``details`` per field) for unknown types."""
    document = settings.update_settings(user.id, data)
    db.session.commit()
    return document


def unsubscribe_one_click(token: str) -> int:
    """``POST /api/email/unsubscribe?token=`` (RFC 8058): turn off what the signed token
    names for its user, without login; idempotent. Returns the user id. Raises
    :class:`tasktracker.mail.unsubscribe.InvalidUnsubscribeToken` (422
    ``invalid_unsubscribe_token``) for a tampered or foreign token."""
    user_id, _ = unsubscribe.unsubscribe(current_app.config["SECRET_KEY"], token)
    db.session.commit()
    return user_id
