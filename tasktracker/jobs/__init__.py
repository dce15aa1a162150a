"""Background work. Only this package decides whether work goes to Celery
(production) or runs in place (embedded mode). See DESIGN.md "Modes"."""

from __future__ import annotations


def enqueue_fanout(seqs: list[int]) -> None:
    """Hand committed events to the fan-out. Placeholder until the real-time
    issue lands: events stay undispatched and the outbox scan will pick them up."""
    return None


def check_broker() -> str | None:
    """None if the broker answers (or none is configured: embedded mode), else the error."""
    return None
