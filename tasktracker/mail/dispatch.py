"""How the mail endpoints hand work to the background: a hook that ``create_app``
fills with :func:`tasktracker.jobs.enqueue_mail_job` (mail/ cannot import jobs/,
which imports the fan-out, which imports mail/: the factory wires them, as it does
for events/)."""

from __future__ import annotations

from typing import Callable

from flask import Flask, current_app

_KEY = "tasktracker.mail_dispatch"


def register_dispatcher(app: Flask, submit: Callable[[str, list], None]) -> None:
    """Make ``submit(job_name, args)`` the way this app's mail endpoints queue a job
    (:data:`tasktracker.mail.work.JOBS`)."""
    app.extensions[_KEY] = submit


def submit(job_name: str, *args) -> None:
    """Queue the mail job ``job_name`` with ``args`` through the registered dispatcher.
    Never raises (the dispatcher logs a failure); the request has answered already."""
    current_app.extensions[_KEY](job_name, list(args))
