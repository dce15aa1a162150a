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
``PRESENCE_HEARTBEAT_SECONDS``. Transitions are decided on the *entries*
(a user's set going empty <-> non-empty, atomically in Lua scripts, so tabs on
several servers are counted right), and each transition is reported exactly once:

- a connection opens/closes: ``add``/``remove`` report "first"/"last" entry;
- a server dies (its heartbeat key expired): reads (:meth:`RedisPresence.online`)
  ignore its entries at once; the next heartbeat of any live server claims the
  dead server (``SREM P:servers``: one claimant), removes its entries and reports
  the users left with none, so their teams get ``presence:update`` offline.
  A crashed server never leaves users online: reads after the TTL, events
  within TTL + one heartbeat interval;
- a live server paused past the TTL gets reaped too; its next heartbeat
  re-asserts its connections and reports those users online again.
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

    def heartbeat(self) -> tuple[list[int], list[int]]:
        """Nothing to refresh in one process: ``([], [])``."""
        return [], []

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._local.clear()


# ARGV: prefix, server_id, ttl, user_id, sid -> entries of the user before this one
_ADD = """
local P, server, ttl, uid, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
redis.call('SET', P .. ':s:' .. server, '1', 'EX', ttl)
redis.call('SADD', P .. ':servers', server)
local ukey = P .. ':u:' .. uid
local before = redis.call('SCARD', ukey)
redis.call('SADD', ukey, server .. ' ' .. sid)
redis.call('SADD', P .. ':s:' .. server .. ':users', uid)
return before
"""

# ARGV: prefix, server_id, user_id, sid -> {removed (0/1), entries left}
_REMOVE = """
local P, server, uid, sid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ukey = P .. ':u:' .. uid
local removed = redis.call('SREM', ukey, server .. ' ' .. sid)
local still_here = 0
for _, m in ipairs(redis.call('SMEMBERS', ukey)) do
  if string.sub(m, 1, string.len(server) + 1) == server .. ' ' then still_here = 1 end
end
if still_here == 0 then redis.call('SREM', P .. ':s:' .. server .. ':users', uid) end
return {removed, redis.call('SCARD', ukey)}
"""

# ARGV: prefix, user ids... -> list of 0/1 (1: an entry whose server is alive)
_ONLINE = """
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local live = 0
  for _, m in ipairs(redis.call('SMEMBERS', P .. ':u:' .. ARGV[i])) do
    local srv = string.match(m, '^(%S+) ')
    if srv and redis.call('EXISTS', P .. ':s:' .. srv) == 1 then live = 1; break end
  end
  out[#out + 1] = live
end
return out
"""

# ARGV: prefix, server_id, ttl, then pairs user_id, sid (this server's open connections)
# -> user ids whose set was empty (they had been reaped: online again)
_HEARTBEAT = """
local P, server, ttl = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', P .. ':s:' .. server, '1', 'EX', ttl)
redis.call('SADD', P .. ':servers', server)
local back = {}
for i = 4, #ARGV, 2 do
  local ukey = P .. ':u:' .. ARGV[i]
  local before = redis.call('SCARD', ukey)
  if redis.call('SADD', ukey, server .. ' ' .. ARGV[i + 1]) == 1 and before == 0 then
    back[#back + 1] = ARGV[i]
  end
  redis.call('SADD', P .. ':s:' .. server .. ':users', ARGV[i])
end
return back
"""

# ARGV: prefix, dead server_id -> user ids left with no entry at all
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
        """Record an open connection; True if the user had no connection before."""
        with self._lock:
            server = self.server_id
            self._local[sid] = int(user_id)  # first: a failed Redis call is repaired by the heartbeat
            before = self._add(args=[self.prefix, server, self.ttl, user_id, sid])
        return int(before) == 0

    def remove(self, sid: str) -> tuple[int | None, bool]:
        """Forget a connection: ``(user_id or None if unknown, True if it was the user's
        last connection in any process)``."""
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

    def heartbeat(self) -> tuple[list[int], list[int]]:
        """Refresh this server's key, re-assert its connections, reap dead servers.

        Returns ``(online, offline)`` user ids whose state changed: ``online``
        had been reaped while this server was paused past the TTL; ``offline``
        lost their last connection with a dead server (or with a close that
        failed to reach Redis earlier and is retried here)."""
        back: list[int] = []
        offline: list[int] = []
        with self._lock:
            server = self.server_id
            args = [self.prefix, server, self.ttl]
            for sid, uid in self._local.items():
                args += [uid, sid]
            back = [int(u) for u in self._heartbeat(args=args)]
            while self._failed_removals:
                uid, sid = self._failed_removals[0]
                removed, left = self._remove(args=[self.prefix, server, uid, sid])
                self._failed_removals.pop(0)
                if int(removed) == 1 and int(left) == 0:
                    offline.append(uid)
        for raw in self.redis.smembers(f"{self.prefix}:servers"):
            other = raw.decode() if isinstance(raw, bytes) else raw
            if other == server or self.redis.exists(f"{self.prefix}:s:{other}"):
                continue
            offline += [int(u) for u in self._reap(args=[self.prefix, other])]
        return back, offline

    def clear(self) -> None:
        """Delete every key under the prefix and forget local connections (tests)."""
        with self._lock:
            self._local.clear()
        keys = list(self.redis.scan_iter(match=f"{self.prefix}:*", count=500))
        if keys:
            self.redis.delete(*keys)
