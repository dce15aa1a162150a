"""One JSON error shape for the whole API (api-contract.md, "Errors").

``{"error": {"code": "<snake_case>", "message": "<human text>", "details": {...}}}``

Services raise :class:`ApiError` subclasses; the handlers registered by
:func:`register_error_handlers` turn them, Werkzeug HTTP errors, marshmallow
validation errors, JWT errors and database outages into that shape. Nothing
answers 500 with a stack trace: unexpected errors are logged and answer a
generic ``internal_error``.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from marshmallow import ValidationError
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from sqlalchemy.orm.exc import ObjectDeletedError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from tasktracker.core.converters import register_converters
from tasktracker.core.db import scoped_session

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status, a snake_case code, a message and details."""

    status = 400
    code = "bad_request"
    message = "Bad request."

    def __init__(self, message: str | None = None, *, code: str | None = None,
                 details: dict | None = None, status: int | None = None,
                 headers: dict | None = None):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.details = details or {}
        self.status = status or self.status
        self.headers = headers or {}


class BadRequest(ApiError):
    status, code, message = 400, "bad_request", "Malformed request."


class Unauthorized(ApiError):
    status, code, message = 401, "unauthorized", "Authentication required."


class Forbidden(ApiError):
    status, code, message = 403, "forbidden", "You may not do this."


class NotFound(ApiError):
    status, code, message = 404, "not_found", "Resource not found."


class Conflict(ApiError):
    status, code, message = 409, "conflict", "Conflict."


class PreconditionFailed(ApiError):
    status, code, message = 412, "precondition_failed", "The resource has changed (If-Match)."


class Unprocessable(ApiError):
    status, code, message = 422, "validation_error", "Invalid input."


class ServiceUnavailable(ApiError):
    status, code, message = 503, "service_unavailable", "A dependency is unavailable."


# --------------------------------------------------------------------------- named errors
# One class per error the services raise in several places (as zou's
# ``services/exception.py``): the status, code and default message live here once.
# Each subclasses the generic class of its status, so handlers and ``except
# NotFound`` keep working; the response is the same shape as before.


class TaskNotFound(NotFound):
    """404: the task is missing, not visible to the caller, or in the trash."""

    code, message = "task_not_found", "Task not found."


class TeamNotFound(NotFound):
    """404: the team is missing or the caller is not a member (never revealed)."""

    code, message = "team_not_found", "Team not found."


class MemberNotFound(NotFound):
    """404: the user is not a member of the team."""

    code, message = "member_not_found", "Member not found."


class InvitationNotFound(NotFound):
    """404: no such invitation for the caller (or its team was deleted)."""

    code, message = "invitation_not_found", "Invitation not found."


class CommentNotFound(NotFound):
    """404: the comment is missing, or its task is not visible."""

    code, message = "comment_not_found", "Comment not found."


class AttachmentNotFound(NotFound):
    """404: the attachment is missing, or its task is not visible."""

    code, message = "attachment_not_found", "Attachment not found."


class NotificationNotFound(NotFound):
    """404: the notification is missing or belongs to someone else."""

    code, message = "notification_not_found", "Notification not found."


class UserNotFound(NotFound):
    """404 ``not_found``: no such user, or one the caller may not see."""

    message = "User not found."


class LabelNotFound(NotFound):
    """404: the label is missing, or the caller may not see it (another user's
    personal label, a team the caller is not in)."""

    code, message = "label_not_found", "Label not found."


class ChecklistItemNotFound(NotFound):
    """404: the checklist item is missing, or its task is not visible."""

    code, message = "checklist_item_not_found", "Checklist item not found."


class ConcurrentUpdate(Conflict):
    """409: a concurrent write (a version mismatch, or a row it needed deleted
    meanwhile) prevented this one; nothing was written."""

    code, message = "concurrent_update", "A concurrent change prevented this update; reload and retry."


class OwnerRequired(Forbidden):
    """403: only the team's owner (or a site admin) may do this."""

    code = "owner_required"


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict | None = None):
    """Build the contract's error response: ``(Response, status)``.

    A 413 carries ``Connection: close``: the body it refused is left unread, and a
    server that then drops the connection must not have announced keep-alive
    (granian passes the header on; gunicorn drops it, reads the rest and keeps the
    connection)."""
    response = jsonify({"error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    if status == 413:
        response.headers["Connection"] = "close"
    return response


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    412: "precondition_failed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "validation_error", 429: "rate_limited", 503: "service_unavailable",
}
_KEEP_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def handle_http_exception(exc: HTTPException):
    """Werkzeug HTTP errors (404 route, 405, 413, 415, 429...) in the contract's shape.

    Headers such as ``Allow`` (405) and ``Retry-After`` (429) are kept.
    """
    status = exc.code or 500
    code = _HTTP_CODES.get(status, "http_error")
    message = exc.description or exc.name
    if status == 429:
        message = f"Too many requests: {exc.description}."
    original = exc.get_response()
    headers = {k: original.headers[k] for k in _KEEP_HEADERS if k in original.headers}
    if status == 429 and "Retry-After" not in headers:
        headers["Retry-After"] = "60"
    return error_response(status, code, message, headers=headers)


def handle_api_error(exc: ApiError):
    """:class:`ApiError` in the contract's shape; a 401 always carries a
    ``WWW-Authenticate: Bearer`` challenge (RFC 7235 / RFC 6750)."""
    headers = dict(exc.headers)
    if exc.status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return error_response(exc.status, exc.code, exc.message, exc.details, headers)


def handle_validation_error(exc: ValidationError):
    """marshmallow errors -> 422 with ``details`` mapping field -> list of messages."""
    details = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
    return error_response(422, "validation_error", "Invalid input.", details)


def handle_db_unavailable(exc: DBAPIError):
    """A lost database connection answers 503; the session is reset for the next request.

    A ``DataError`` (a value the database cannot store: out of range, too long,
    bad encoding) comes from input the schemas let through: 422, not 500.
    """
    _reset_session()
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return error_response(503, "database_unavailable", "The database is unavailable.",
                              {"dependency": "database"}, {"Retry-After": "5"})
    if isinstance(exc, DataError):
        log.warning("database refused a value: %s", exc.orig)
        return error_response(422, "invalid_value", "A value is invalid or out of range.")
    log.exception("database error")
    return error_response(500, "internal_error", "Internal server error.")


def handle_pool_exhausted(exc: PoolTimeoutError):
    """Every pooled database connection stayed busy for ``DB_POOL_TIMEOUT`` seconds
    (overload): 503 ``database_unavailable`` with ``Retry-After``, as for an outage
    (api-contract.md: 503 when a dependency is unavailable; never 500)."""
    _reset_session()
    log.warning("database pool exhausted: %s", exc)
    return error_response(503, "database_unavailable", "All database connections are busy; retry shortly.",
                          {"dependency": "database"}, {"Retry-After": "1"})


def handle_row_deleted(exc: ObjectDeletedError):
    """A row the request had loaded was deleted by a concurrent request before the
    request could reload it (typically rendering the response after its own
    commit, e.g. a team deleted right after it was renamed): 404 ``not_found``, as
    a request arriving a moment later gets, never a 500."""
    _reset_session()
    log.info("row deleted concurrently: %s", exc)
    return error_response(404, "not_found", "The resource was deleted meanwhile.")


def _reset_session() -> None:
    """Roll back and drop the request's session. A connection the database closed under
    us fails even on ROLLBACK: that is logged and the connection discarded (the pool's
    ``pool_pre_ping`` replaces it), never turned into an error of its own."""
    session = scoped_session()
    try:
        session.remove()
    except DBAPIError as exc:
        log.warning("database connection lost while closing the session: %s", exc.__class__.__name__)
        try:
            session.remove()  # the broken connection is invalidated by now
        except Exception:  # noqa: BLE001 - nothing more to release
            log.debug("session already unusable", exc_info=True)


def _teardown_session(_exc: BaseException | None) -> None:
    """Runs before Flask-SQLAlchemy's own teardown (registered later, called first):
    the database dying between a request's last query and its end must not turn an
    answered request into gunicorn's HTML 500."""
    _reset_session()


def handle_unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return handle_http_exception(exc)
    log.exception("unhandled error")
    return error_response(500, "internal_error", "Internal server error.")


def register_error_handlers(app: Flask) -> None:
    """Attach the handlers above to ``app`` (and the bounded ``int`` URL converter, so
    an out-of-range id in a URL is a 404, never a database overflow 500)."""
    register_converters(app)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(DBAPIError, handle_db_unavailable)
    app.register_error_handler(PoolTimeoutError, handle_pool_exhausted)
    app.register_error_handler(ObjectDeletedError, handle_row_deleted)
    app.register_error_handler(Exception, handle_unexpected)
    app.teardown_appcontext(_teardown_session)
