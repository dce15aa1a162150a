"""Email (contract v1.1, "Email"): the mail outbox, templates, SMTP/file transport,
daily digests, one-click unsubscribe (RFC 8058) and single-use account tokens.

Foundations only: plain functions over ``db.session`` and the models in
:mod:`tasktracker.mail.models`, with settings passed in as a mapping (usually
``current_app.config``; see :mod:`tasktracker.mail.config`). Nothing here touches
``request``. The endpoints, the fan-out hook and the jobs call these functions:

- :mod:`.settings`: per-user notification settings (``/api/auth/profile/notification-settings``).
- :mod:`.outbox`: write email rows in the caller's transaction, claim and deliver them.
- :mod:`.digest`: which users are due a daily digest now, and its content.
- :mod:`.tokens`: password-reset and email-verification tokens (hashed, single use).
- :mod:`.unsubscribe`: signed one-click unsubscribe tokens.
- :mod:`.message`, :mod:`.render`, :mod:`.transport`: building, rendering and sending.
"""
