"""Presence: a user is online while at least one of their Socket.IO connections is open,
in any server process (api-contract.md, "Real time").

Two stores with the same interface:

- :class:`MemoryPresence` (embedded mode, one process): user id -> set of sids.
- :class:`RedisPresence` (production, ``REDIS_URL``): shared by every server process.

Redis layout (``P`` = ``PRESENCE_KEY_PREFIX``)::

    P:u:<user_id>       SET of "<server_id> <sid>"  (the user's open connections)
    P:s:<server_id>     heartbeat key, expires after PRESENCE_SERVER_TTL_SECONDS
    P:s:<server_id>:users  SET of user ids with connections on that server
    P:servers           SET of server ids seen

Each server process refreshes its heartbeat key every
``PRESENCE_HEARTBEAT_SECONDS`` (and re-asserts its own connections, in case they
were pruned while it was paused). A connection whose server's heartbeat key is
gone counts as closed: every read prunes such entries, and the heartbeat of any
live server claims a dead server (``SREM P:servers``, so only one live server
does it) and removes all of its entries, reporting the users that went offline
so their teams get ``presence:update {online: false}``. A crashed server
therefore never leaves users online for longer than the TTL. All changes run as
Lua scripts, so "first connection opened" / "last connection closed" are decided
atomically even with tabs on several servers.
"""

from __future__ import annotations

import os
import threading
import uuid


class _LocalConnections:
    """This process's open connections ``sid -> user_id`` (both stores keep one)."""

    def __init__(self):
        self._lock = threading.RLock()
        self._local: dict[str, int] = {}

    def user_of(self, sid: str) -> int | None:
        """The user of a connection of this process, or None."""
        return self._local.get(sid)

    def local_connections(self) -> dict[str, int]:
        """A copy of this process's ``sid -> user_id``."""
        with self._lock:
            return dict(self._local)


class MemoryPresence(_LocalConnections):
    """In-process presence (embedded mode). Thread-safe."""

    def add(self, user_id: int, sid: str) -> bool:
        """Record an open connection; True if the user was offline before."""
        with self._lock:
            was_offline = user_id not in self._local.values()
            self._local[sid] = user_id
            return was_offline

    def remove(self, sid: str) -> tuple[int | None, bool]:
        """Forget a connection: ``(user_id or None if unknown, True if it was the last one)``."""
        with self._lock:
            user_id = self._local.pop(sid, None)
            if user_id is None:
                return None, False
            return user_id, user_id not in self._local.values()

    def online(self, user_ids) -> set[int]:
        """The subset of ``user_ids`` that are online."""
        with self._lock:
            live = set(self._local.values())
        return {int(uid) for uid in user_ids if int(uid) in live}

    def heartbeat(self) -> list[int]:
        """Nothing to refresh in one process; nobody goes offline here."""
        return []

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._local.clear()


_PRUNE = """
local function prune(P, ukey)
  for _, m in ipairs(redis.call('SMEMBERS', ukey)) do
    local srv = string.match(m, '^(%S+) ')
    if srv == nil or redis.call('EXISTS', P .. ':s:' .. srv) == 0 then
      redis.call('SREM', ukey, m)
    end
  end
end
"""

# ARGV: prefix, server_id, ttl, user_id, sid -> count of live connections before this one
_ADD = _PRUNE + """
local P, server, ttl, uid, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', P .. ':s:' .. server, '1', 'EX', ttl)
redis.call('SADD', P .. ':servers', server)
local ukey = P .. ':u:' .. uid
prune(P, ukey)
local before = redis.call('SCARD', ukey)
redis.call('SADD', ukey, server .. ' ' .. sid)
redis.call('SADD', P .. ':s:' .. server .. ':users', uid)
return before
"""

# ARGV: prefix, server_id, user_id, sid -> {removed (0/1), live connections left}
_REMOVE = _PRUNE + """
local P, server, uid, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ukey = P .. ':u:' .. uid
local removed = redis.call('SREM', ukey, server .. ' ' .. sid)
prune(P, ukey)
local still_here = 0
for _, m in ipairs(redis.call('SMEMBERS', ukey)) do
  if string.sub(m, 1, string.len(server) + 1) == server .. ' ' then still_here = 1 end
end
if still_here == 0 then redis.call('SREM', P .. ':s:' .. server .. ':users', uid) end
return {removed, redis.call('SCARD', ukey)}
"""

# ARGV: prefix, user ids... -> list of 0/1
_ONLINE = _PRUNE + """
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local ukey = P .. ':u:' .. ARGV[i]
  prune(P, ukey)
  out[#out + 1] = (redis.call('SCARD', ukey) > 0) and 1 or 0
end
return out
"""

# ARGV: prefix, server_id, ttl, then pairs user_id, sid (this server's open connections)
_HEARTBEAT = """
local P, server, ttl = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', P .. ':s:' .. server, '1', 'EX', ttl)
redis.call('SADD', P .. ':servers', server)
for i = 4, #ARGV, 2 do
  redis.call('SADD', P .. ':u:' .. ARGV[i], server .. ' ' .. ARGV[i + 1])
  redis.call('SADD', P .. ':s:' .. server .. ':users', ARGV[i])
end
return 1
"""

# ARGV: prefix, dead server_id -> user ids left with no connection at all
_REAP = """
local P, dead = ARGV[1], ARGV[2]
if redis.call('EXISTS', P .. ':s:' .. dead) == 1 then return {} end
if redis.call('SREM', P .. ':servers', dead) == 0 then return {} end
local offline = {}
local ukeys = P .. ':s:' .. dead .. ':users'
for _, uid in ipairs(redis.call('SMEMBERS', ukeys)) do
  local ukey = P .. ':u:' .. uid
  local removed = 0
  for _, m in ipairs(redis.call('SMEMBERS', ukey)) do
    if string.sub(m, 1, string.len(dead) + 1) == dead .. ' ' then
      removed = removed + redis.call('SREM', ukey, m)
    end
  end
  if removed > 0 and redis.call('SCARD', ukey) == 0 then offline[#offline + 1] = uid end
end
redis.call('DEL', ukeys)
return offline
"""


class RedisPresence(_LocalConnections):
    """Presence shared by all server processes through Redis (see the module doc).

    ``server_id`` identifies this process; by default a random id, regenerated
    after a fork so two gunicorn workers never share one. Local changes and the
    heartbeat's re-assertion run under one lock, so a connection closed during a
    heartbeat is never written back.
    """

    def __init__(self, client, prefix: str, ttl_seconds: int, server_id: str | None = None):
        super().__init__()
        self.redis = client
        self.prefix = prefix
        self.ttl = int(ttl_seconds)
        self._fixed_server_id = server_id
        self._server_id: tuple[int, str] | None = None
        self._failed_removals: list[tuple[int, str]] = []
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._online = client.register_script(_ONLINE)
        self._heartbeat = client.register_script(_HEARTBEAT)
        self._reap = client.register_script(_REAP)

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_seconds: int, server_id: str | None = None):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5,
                                      health_check_interval=30)
        return cls(client, prefix, ttl_seconds, server_id)

    @property
    def server_id(self) -> str:
        if self._fixed_server_id:
            return self._fixed_server_id
        pid = os.getpid()
        if self._server_id is None or self._server_id[0] != pid:
            self._server_id = (pid, uuid.uuid4().hex[:16])
            self._local = {}
            self._failed_removals = []
        return self._server_id[1]

    def add(self, user_id: int, sid: str) -> bool:
        """Record an open connection; True if the user had no live connection before."""
        with self._lock:
            server = self.server_id
            self._local[sid] = int(user_id)  # first: a failed Redis call is repaired by the heartbeat
            before = self._add(args=[self.prefix, server, self.ttl, user_id, sid])
        return int(before) == 0

    def remove(self, sid: str) -> tuple[int | None, bool]:
        """Forget a connection: ``(user_id or None if unknown, True if it was the user's
        last live connection in any process)``."""
        with self._lock:
            server = self.server_id
            user_id = self._local.pop(sid, None)
            if user_id is None:
                return None, False
            try:
                removed, left = self._remove(args=[self.prefix, server, user_id, sid])
            except Exception:
                self._failed_removals.append((user_id, sid))  # retried by the heartbeat
                raise
        return user_id, int(removed) == 1 and int(left) == 0

    def online(self, user_ids) -> set[int]:
        """The subset of ``user_ids`` with at least one live connection."""
        ids = [int(u) for u in user_ids]
        if not ids:
            return set()
        flags = self._online(args=[self.prefix, *ids])
        return {uid for uid, flag in zip(ids, flags) if int(flag)}

    def heartbeat(self) -> list[int]:
        """Refresh this server's key, re-assert its connections, reap dead servers.

        Returns the user ids that went offline: their server died, or a close that
        failed to reach Redis earlier was their last connection."""
        offline: list[int] = []
        with self._lock:
            server = self.server_id
            args = [self.prefix, server, self.ttl]
            for sid, uid in self._local.items():
                args += [uid, sid]
            self._heartbeat(args=args)
            while self._failed_removals:
                uid, sid = self._failed_removals[0]
                removed, left = self._remove(args=[self.prefix, server, uid, sid])
                self._failed_removals.pop(0)
                if int(removed) == 1 and int(left) == 0:
                    offline.append(uid)
        for raw in self.redis.smembers(f"{self.prefix}:servers"):
            other = raw.decode() if isinstance(raw, bytes) else raw
            if other == self.server_id or self.redis.exists(f"{self.prefix}:s:{other}"):
                continue
            offline += [int(u) for u in self._reap(args=[self.prefix, other])]
        return offline

    def clear(self) -> None:
        """Delete every key under the prefix and forget local connections (tests)."""
        with self._lock:
            self._local.clear()
        keys = list(self.redis.scan_iter(match=f"{self.prefix}:*", count=500))
        if keys:
            self.redis.delete(*keys)
