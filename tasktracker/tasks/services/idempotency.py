"""``Idempotency-Key`` of ``POST /api/tasks`` (api-contract.md, "Tasks"): the first
result for (caller, key) within ``IDEMPOTENCY_TTL`` (24 h) is returned again.

Concurrent duplicates are settled by the unique (user_id, key) constraint: the
loser's insert fails, it rolls back and replays the winner (:func:`claim`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import sqlalchemy as sa
from flask import current_app

from tasktracker.core.errors import Conflict, Unprocessable
from tasktracker.core.types import utcnow
from tasktracker.extensions import db
from tasktracker.tasks.models import IdempotencyKey, Task


def request_hash(body: dict) -> str:
    """SHA-256 of the canonical JSON of a request body (key order, spacing ignored)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _cutoff(now: datetime | None = None) -> datetime:
    """Keys created before this are expired (``IDEMPOTENCY_TTL`` ago)."""
    return (now or utcnow()) - current_app.config["IDEMPOTENCY_TTL"]


def purge_expired_idempotency_keys(now: datetime | None = None, *, batch: int = 1000) -> int:
    """Delete the idempotency keys older than ``IDEMPOTENCY_TTL`` (they would only be
    replaced on reuse otherwise: the table would grow forever), ``batch`` rows per
    transaction, oldest first (index on ``created_at``). Returns how many were deleted.
    Safe beside task creation: an expired key is never replayed anyway. The beat runs
    it hourly."""
    cutoff = _cutoff(now)
    deleted = 0
    while True:
        ids = sa.select(IdempotencyKey.id).where(IdempotencyKey.created_at < cutoff) \
            .order_by(IdempotencyKey.created_at).limit(batch)
        count = db.session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.id.in_(ids.scalar_subquery()))
                                   .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        deleted += count
        if count < batch:
            return deleted


def _find_key(user_id: int, key: str) -> IdempotencyKey | None:
    return db.session.scalar(sa.select(IdempotencyKey).where(IdempotencyKey.user_id == user_id,
                                                             IdempotencyKey.key == key))


def _replay(record: IdempotencyKey | None, body_hash: str) -> Task:
    """The task created by the first request with this key (422 if the body differs)."""
    if record is None or record.task_id is None:
        raise Conflict("A request with this Idempotency-Key is still in progress; retry.",
                       code="idempotency_key_in_progress")
    if record.request_hash != body_hash:
        raise Unprocessable("This Idempotency-Key was used with a different request body.",
                            code="idempotency_key_reused",
                            details={"Idempotency-Key": ["Already used with a different body."]})
    task = db.session.get(Task, record.task_id)
    if task is None:  # purged in between: the key row goes with it (ON DELETE CASCADE)
        raise Conflict("The task created with this Idempotency-Key no longer exists.",
                       code="idempotency_key_in_progress")
    return task


def replay(user_id: int, key: str, body_hash: str) -> Task:
    """The task a committed twin request created with ``key`` (409 while it is in
    progress, 422 ``idempotency_key_reused`` for another body)."""
    return _replay(_find_key(user_id, key), body_hash)


def earlier_result(user_id: int, key: str, body_hash: str) -> Task | None:
    """The task an earlier request with ``key`` created (see :func:`replay`), or None if
    the key is unused or expired; an expired key row is deleted (a bulk DELETE, so a
    concurrent twin that deleted it first is no error)."""
    record = _find_key(user_id, key)
    cutoff = _cutoff()
    if record is not None and record.created_at < cutoff:
        db.session.execute(sa.delete(IdempotencyKey).where(
            IdempotencyKey.user_id == user_id, IdempotencyKey.key == key,
            IdempotencyKey.created_at < cutoff).execution_options(synchronize_session=False))
        db.session.expunge(record)
        record = None
    return _replay(record, body_hash) if record is not None else None


def claim(user_id: int, key: str, body_hash: str) -> IdempotencyKey | None:
    """Insert the key row (flushed, not committed): the caller sets its ``task_id``
    and commits. None if a concurrent twin claimed it first (rolled back: replay it)."""
    record = IdempotencyKey(user_id=user_id, key=key, request_hash=body_hash)
    db.session.add(record)
    try:
        db.session.flush()  # a concurrent twin blocks or fails here
    except sa.exc.IntegrityError:
        db.session.rollback()
        return None
    return record
