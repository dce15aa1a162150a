"""Notifications, by seam:

- :mod:`.rest`: the caller's list, unread count and read marks (the REST API);
- :mod:`.fanout`: turning committed events into notification rows and Socket.IO
  pushes, exactly once;
- :mod:`.recipients`: who hears of each event type (the rule table), which
  emits, rooms and re-checks it causes.

The names below are the package's public API.
"""

from tasktracker.notifications.services.fanout import (
    FANOUT_CHUNK, FanoutResult, fan_out, fan_out_job, fan_out_many, redispatch, register_realtime,
)
from tasktracker.notifications.services.recipients import SOCKET_EVENTS
from tasktracker.notifications.services.rest import (
    get_own_notification, notifications_query, read_all, set_read, unread_count,
)

__all__ = [
    "FANOUT_CHUNK", "FanoutResult", "SOCKET_EVENTS", "fan_out", "fan_out_job", "fan_out_many",
    "get_own_notification", "notifications_query", "read_all", "redispatch", "register_realtime",
    "set_read", "unread_count",
]
