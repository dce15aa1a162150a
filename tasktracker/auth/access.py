"""Decorators for resources: bearer authentication and the admin role.

The bearer is a JWT access token (Flask-JWT-Extended) or a personal access token
(``tt_pat_...``, api-contract.md v1.1 "Personal access tokens"): one guard,
:func:`auth_required`, takes either, so every route that takes a bearer takes both.
A PAT is checked by :func:`tasktracker.tokens.services.authenticate` (hot cache:
refused at once in every process after delete, expiry or deactivation), then its
scope (``read``: GET/HEAD/OPTIONS only) and the routes no PAT may use (403
``insufficient_scope``, RFC 6750 §3.1); its ``last_used_at`` is touched at most
once a minute. The handlers then see the user as ``flask_jwt_extended.current_user``
and the token's identity as ``flask.g.pat``.
"""

from __future__ import annotations

from functools import wraps

from flask import current_app, g, request
from flask_jwt_extended import current_user, jwt_required

from tasktracker.core.errors import Forbidden, error_response
from tasktracker.extensions import limiter
from tasktracker.tokens import services as pat


def _bearer_credential() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, credential = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credential.strip() or None


def _pat_unauthorized():
    return error_response(401, "invalid_token", "Invalid, expired or revoked personal access token.",
                          headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _authenticate_pat(raw: str):
    """Authenticate a PAT bearer for this request; an error response, or None with
    the user in Flask-JWT-Extended's ``g`` slot (so ``current_user`` works) and the
    token's identity in ``g.pat``."""
    found = pat.authenticate(raw)
    if found is None:
        return _pat_unauthorized()
    identity, user = found
    if pat.pat_forbidden_route(request.method, request.path):
        raise pat.InsufficientScope("A personal access token cannot do this.", scope="session")
    pat.require_scope(identity.scopes, request.method)
    g.pat = identity
    g._jwt_extended_jwt_user = {"loaded_user": user}
    g._jwt_extended_jwt = {"sub": str(user.id), "type": "pat", "pat_id": identity.token_id}
    g._jwt_extended_jwt_header = {}
    pat.touch_last_used(identity.token_id)
    return None


def auth_required(fn):
    """The bearer guard of a resource method: a valid JWT access token or personal
    access token, else 401 (a PAT without the scope or on a session-only route: 403
    ``insufficient_scope``)."""
    with_jwt = jwt_required()(fn)

    @wraps(fn)
    def wrapper(*args, **kwargs):
        raw = _bearer_credential()
        if pat.looks_like_pat(raw):
            refused = _authenticate_pat(raw)
            if refused is not None:
                return refused
            return fn(*args, **kwargs)
        return with_jwt(*args, **kwargs)

    return wrapper


def admin_required(fn):
    """Bearer token (JWT or PAT) of a site admin; others get 403 (api-contract: admin endpoints)."""

    @wraps(fn)
    @auth_required
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            raise Forbidden("Admin role required.", code="admin_required")
        return fn(*args, **kwargs)

    return wrapper


def _login_limits_off() -> bool:
    """Login limits follow this app's ``RATELIMIT_ENABLED`` (the limiter object is process-wide)."""
    return not current_app.config.get("RATELIMIT_ENABLED", True)


def login_rate_limits(scope: str, account_key) -> list:
    """The resource ``decorators`` of a credential endpoint, limited like login
    (api-contract.md, "Auth"): ``LOGIN_RATE_LIMIT_ACCOUNT`` per account (the key
    ``account_key()`` derives from the request) and ``LOGIN_RATE_LIMIT_IP`` per client
    address, in the limiter scopes ``<scope>-account`` and ``<scope>-ip``; 429 beyond."""
    return [
        limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_ACCOUNT"], key_func=account_key,
                      scope=f"{scope}-account", exempt_when=_login_limits_off),
        limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT_IP"], scope=f"{scope}-ip",
                      exempt_when=_login_limits_off),
    ]
