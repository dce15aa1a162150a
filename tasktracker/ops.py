"""Operational endpoints: ``/health`` (liveness) and ``/ready`` (dependencies)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from tasktracker.extensions import db

bp = Blueprint("ops", __name__)


def check_database() -> str | None:
    """None if the database answers ``SELECT 1``, else the error class name."""
    try:
        db.session.execute(sa.text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        db.session.rollback()
        return exc.__class__.__name__


@bp.get("/health")
def health():
    """Liveness: ``200 {"status": "ok"}`` while the process serves."""
    return jsonify(status="ok")


@bp.get("/ready")
def ready():
    """Readiness: ``200 {"status": "ready", "checks": {...}}`` when the database and
    broker answer, else ``503`` in the contract's error shape naming the failed ones."""
    from tasktracker.jobs import check_broker

    checks = {"database": check_database(), "broker": check_broker()}
    failed = {name: err for name, err in checks.items() if err}
    if failed:
        from tasktracker.core.errors import error_response

        return error_response(503, "not_ready", "Dependencies unavailable: " + ", ".join(failed),
                              {"failed": failed})
    return jsonify(status="ready", checks={name: "ok" for name in checks})
