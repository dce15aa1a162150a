"""Decorators for resources: bearer authentication and the admin role."""

from __future__ import annotations

from functools import wraps

from flask_jwt_extended import current_user, jwt_required

from tasktracker.core.errors import Forbidden

auth_required = jwt_required()


def admin_required(fn):
    """Bearer token of a site admin; others get 403 (api-contract: admin endpoints)."""

    @wraps(fn)
    @jwt_required()
    def wrapper(*args, **kwargs):
        if not current_user.is_admin:
            raise Forbidden("Admin role required.", code="admin_required")
        return fn(*args, **kwargs)

    return wrapper
