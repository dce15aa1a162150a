"""Webhooks (api-contract.md v1.1, "Webhooks"): a team's HTTP endpoints receive its
events as signed JSON POSTs.

- :mod:`.models`: ``Webhook`` and ``WebhookDelivery`` (the outbox row of one attempt
  series: written with the change, claimed with a lease after commit).
- :mod:`.signing`: the exact body bytes, ``sign``/``verify`` (HMAC-SHA256 over
  ``"<timestamp>.<raw body>"``).
- :mod:`.ssrf`: refuse targets resolving to non-public addresses.
- :mod:`.delivery`: claim, send (httpx), record the result, backoff, auto-disable.
- :mod:`.services`: create/update/delete/rotate/ping/redeliver/list and
  ``deliveries_for_event`` (events row -> delivery rows, same transaction).
"""
