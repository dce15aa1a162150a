"""Email (contract v1.1, "Email"): the mail outbox, templates, SMTP/file transport,
daily digests, one-click unsubscribe (RFC 8058) and single-use account tokens.

Plain functions over ``db.session`` and the models in
:mod:`tasktracker.mail.models`, with settings passed in as a mapping (usually
``current_app.config``; see :mod:`tasktracker.mail.config`). Only :mod:`.resources`
touches ``request``. Wiring: the fan-out calls :func:`.outbox.enqueue_for_notifications`
in its transaction; :mod:`.resources` / :mod:`.services` are the endpoints; the jobs
(:mod:`tasktracker.jobs`) run :mod:`.work`, queued by the endpoints through
:mod:`.dispatch` (filled by ``create_app``).

- :mod:`.settings`: per-user notification settings (``/api/auth/profile/notification-settings``).
- :mod:`.outbox`: write email rows in the caller's transaction, claim and deliver them.
- :mod:`.digest`: which users are due a daily digest now, and its content.
- :mod:`.tokens`: password-reset and email-verification tokens (hashed, single use).
- :mod:`.unsubscribe`: signed one-click unsubscribe tokens.
- :mod:`.message`, :mod:`.render`, :mod:`.transport`: building, rendering and sending.
"""
