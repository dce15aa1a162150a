#!/usr/bin/env python
"""Many-connection clients for bench/run.py (split topology), one asyncio process each.

    .venv/bin/python bench/sockets_client.py CONFIG.json

Speaks the wire protocols directly (Engine.IO 4 over a websocket, Socket.IO 5 packets)
on ``aiohttp`` websockets, far lighter than one python-socketio client per socket, so
a few processes carry 10,000 sockets on a small machine. Each socket's TCP connection
leaves from one of the configured loopback source addresses (an ``aiohttp.TCPConnector``
with ``local_addr=(addr, 0)`` per address), so that nginx's ``hash $remote_addr`` and the
gateways' per-address cap see several clients.

Modes (``"mode"`` in the JSON config):

``sockets``: open ``n`` authenticated Socket.IO connections (``40{"token": ...}``,
wait for the ``40`` answer; ``44`` is a refused connect), answer Engine.IO pings,
and timestamp (``time.monotonic()``, the system-wide CLOCK_MONOTONIC, comparable with
the parent's) every ``task:created`` event per socket.

``flood``: ``ws`` raw Engine.IO websockets that never send a Socket.IO CONNECT (they
answer pings, as a patient attacker would) and ``slow`` TCP connections that send part
of a request's headers, then nothing. A connection the server closes after accepting
it is re-opened (at most ``max_reopen`` times per slot) while the flood runs; a refused
one is not retried.

Protocol with the parent: one JSON object per stdout line. First ``{"type": "ready",
...}`` once every connection has been tried; then commands on stdin, one per line:
``report <task_id>`` (sockets: who got that event), ``status``, ``window`` (flood: reset
the min/max of open connections), ``quit`` (close everything, print ``{"type": "bye"}``,
exit). Every wait is bounded; the process exits by itself after ``max_life`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter

import aiohttp


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return f"handshake HTTP {exc.status}"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"connect: {exc.os_error.__class__.__name__}"
    if isinstance(exc, OSError):
        return f"{exc.__class__.__name__}"
    return exc.__class__.__name__ + (f": {str(exc)[:60]}" if str(exc) else "")


def sessions(addrs: list[str], timeout: float) -> dict[str, aiohttp.ClientSession]:
    return {a: aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=(a, 0), limit=0, force_close=True),
        timeout=aiohttp.ClientTimeout(total=None, connect=timeout, sock_connect=timeout))
        for a in addrs}


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1).rstrip("/") + "/socket.io/?EIO=4&transport=websocket"


async def stdin_lines():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# --------------------------------------------------------------------------- sockets

class SocketsMode:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.url = ws_url(cfg["url"])
        self.arrivals: dict[int, dict[int, list[float]]] = {}  # task id -> socket idx -> times
        self.open: set[int] = set()
        self.errors: Counter = Counter()
        self.retried: Counter = Counter()  # failed attempts that were retried, by reason
        self.closed_by_server = 0
        self.connect_ms: list[float] = []
        self.done_at: list[float] = []  # monotonic time each connect completed
        self.tasks: list[asyncio.Task] = []
        self.wss: dict[int, aiohttp.ClientWebSocketResponse] = {}
        self.stopping = False

    ATTEMPTS = 3  # as a real Socket.IO client, reconnect after a failed connect

    async def _connect(self, http: aiohttp.ClientSession, token: str, timeout: float):
        """One Engine.IO websocket + authenticated Socket.IO connect; the open ws, or raises."""
        ws = await asyncio.wait_for(http.ws_connect(self.url, autoping=True, max_msg_size=0), timeout)
        try:
            msg = await asyncio.wait_for(ws.receive(), timeout)
            if msg.type != aiohttp.WSMsgType.TEXT or not msg.data.startswith("0"):
                raise ConnectionError(f"no Engine.IO OPEN ({msg.type.name})")
            await ws.send_str("40" + json.dumps({"token": token}))
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"closed before the Socket.IO connect ({msg.type.name})")
                if msg.data == "2":
                    await ws.send_str("3")
                    continue
                if msg.data.startswith("40"):
                    return ws
                if msg.data.startswith("44"):
                    raise ConnectionError(f"connect_error {msg.data[2:80]}")
                # anything else before the connect answer (should not happen): ignore
        except BaseException:
            await ws.close()
            raise

    async def one(self, idx: int, http: aiohttp.ClientSession, token: str, sem: asyncio.Semaphore,
                  connected: asyncio.Event) -> None:
        timeout = self.cfg.get("timeout", 30)
        t0 = time.monotonic()
        async with sem:
            for attempt in range(self.ATTEMPTS):
                try:
                    ws = await self._connect(http, token, timeout)
                    break
                except Exception as exc:  # noqa: BLE001
                    why = str(exc) if isinstance(exc, ConnectionError) else reason(exc)
                    if attempt + 1 < self.ATTEMPTS:
                        self.retried[why] += 1
                        await asyncio.sleep(0.5 * (attempt + 1))
                        continue
                    self.errors[why] += 1
                    connected.set()
                    return
        self.connect_ms.append((time.monotonic() - t0) * 1000)
        self.done_at.append(time.monotonic())
        self.open.add(idx)
        self.wss[idx] = ws
        connected.set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.data
                if data == "2":
                    await ws.send_str("3")
                elif data.startswith('42["task:created"'):
                    t = time.monotonic()
                    try:
                        tid = json.loads(data[2:])[1].get("id")
                    except Exception:  # noqa: BLE001
                        continue
                    self.arrivals.setdefault(tid, {}).setdefault(idx, []).append(t)
        except Exception as exc:  # noqa: BLE001
            self.errors["after connect: " + reason(exc)] += 1
        finally:
            self.open.discard(idx)
            if not self.stopping:
                self.closed_by_server += 1

    def status(self) -> dict:
        ms = sorted(self.connect_ms)
        return {"open": len(self.open), "closed_by_server": self.closed_by_server,
                "errors": dict(self.errors.most_common(8)), "retried": dict(self.retried.most_common(8)),
                "connect_p50_ms": ms[len(ms) // 2] if ms else None,
                "connect_p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None}

    async def run(self) -> None:
        cfg = self.cfg
        addrs, tokens, n = cfg["addrs"], cfg["tokens"], cfg["n"]
        https = sessions(addrs, cfg.get("timeout", 30))
        sem = asyncio.Semaphore(cfg.get("concurrency", 64))
        t0 = time.monotonic()
        events = []
        for i in range(n):
            ev = asyncio.Event()
            events.append(ev)
            self.tasks.append(asyncio.create_task(
                self.one(i, https[addrs[i % len(addrs)]], tokens[i % len(tokens)], sem, ev)))
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), cfg.get("connect_budget", 300))
        except asyncio.TimeoutError:
            self.errors["connect phase over budget"] += sum(1 for e in events if not e.is_set())
        out({"type": "ready", "n": n, "connected": len(self.open), "connect_s": time.monotonic() - t0,
             "done_at": [round(t, 3) for t in sorted(self.done_at)], **self.status()})
        reader = await stdin_lines()
        deadline = time.monotonic() + cfg.get("max_life", 900)
        try:
            while time.monotonic() < deadline:
                try:
                    line = await asyncio.wait_for(reader.readline(), 5)
                except asyncio.TimeoutError:
                    continue
                if not line:
                    break
                cmd, _, arg = line.decode().strip().partition(" ")
                if cmd == "report":
                    tid = int(arg)
                    per = self.arrivals.get(tid, {})
                    times = [ts[0] for ts in per.values()]
                    out({"type": "report", "tid": tid, "open": len(self.open), "delivered": len(per),
                         "duplicates": sum(len(ts) - 1 for ts in per.values()),
                         "first": min(times) if times else None, "last": max(times) if times else None})
                elif cmd == "status":
                    out({"type": "status", **self.status()})
                elif cmd == "quit":
                    break
        finally:
            self.stopping = True
            t1 = time.monotonic()
            await asyncio.gather(*(asyncio.wait_for(ws.close(), 5) for ws in list(self.wss.values())),
                                 return_exceptions=True)
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.gather(*(h.close() for h in https.values()), return_exceptions=True)
            out({"type": "bye", "close_s": time.monotonic() - t1})


# --------------------------------------------------------------------------- flood

class FloodMode:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.url = ws_url(cfg["url"])
        self.host, self.port = cfg["url"].split("//", 1)[1].rstrip("/").split(":")
        self.running = True
        self.ws = {"attempts": 0, "accepted": 0, "refused": Counter(), "closed_by_server": 0,
                   "lifetimes": [], "open": 0}
        self.slow = {"attempts": 0, "connected": 0, "refused": Counter(), "closed_by_server": 0,
                     "lifetimes": [], "open": 0, "answers": Counter()}
        self.window = {"ws_min": None, "ws_max": None, "slow_min": None, "slow_max": None}

    def sample(self) -> None:
        w = self.window
        for key, val in (("ws", self.ws["open"]), ("slow", self.slow["open"])):
            w[f"{key}_min"] = val if w[f"{key}_min"] is None else min(w[f"{key}_min"], val)
            w[f"{key}_max"] = val if w[f"{key}_max"] is None else max(w[f"{key}_max"], val)

    async def ws_slot(self, http: aiohttp.ClientSession, sem: asyncio.Semaphore, first: asyncio.Event):
        timeout = self.cfg.get("handshake_timeout", 10)
        for _ in range(1 + self.cfg.get("max_reopen", 20)):
            if not self.running:
                break
            self.ws["attempts"] += 1
            async with sem:
                try:
                    ws = await asyncio.wait_for(http.ws_connect(self.url, autoping=True), timeout)
                    msg = await asyncio.wait_for(ws.receive(), timeout)
                except Exception as exc:  # noqa: BLE001
                    self.ws["refused"][reason(exc)] += 1
                    first.set()
                    return
            if msg.type != aiohttp.WSMsgType.TEXT or not msg.data.startswith("0"):
                self.ws["refused"][f"closed before the Engine.IO OPEN ({msg.type.name})"] += 1
                await ws.close()
                first.set()
                return
            self.ws["accepted"] += 1
            self.ws["open"] += 1
            first.set()
            t0 = time.monotonic()
            try:
                async for m in ws:
                    if m.type == aiohttp.WSMsgType.TEXT and m.data == "2":
                        await ws.send_str("3")
            except Exception:  # noqa: BLE001
                pass
            finally:
                self.ws["open"] -= 1
                self.sample()
            if not self.running:
                await ws.close()
                break
            self.ws["closed_by_server"] += 1
            self.ws["lifetimes"].append(time.monotonic() - t0)

    async def slow_slot(self, sem: asyncio.Semaphore, first: asyncio.Event):
        addr = self.cfg["addr"]
        partial = (f"GET /api/tasks?per_page=100 HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"User-Agent: bench-slow-headers\r\nAccept: */*\r\nX-Slow: ").encode()
        for _ in range(1 + self.cfg.get("max_reopen", 20)):
            if not self.running:
                break
            self.slow["attempts"] += 1
            async with sem:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(self.host, int(self.port), local_addr=(addr, 0)),
                        self.cfg.get("handshake_timeout", 10))
                    writer.write(partial)
                    await writer.drain()
                except Exception as exc:  # noqa: BLE001
                    self.slow["refused"][reason(exc)] += 1
                    first.set()
                    return
            self.slow["connected"] += 1
            self.slow["open"] += 1
            first.set()
            t0 = time.monotonic()
            try:
                data = await reader.read(200)  # blocks until the server answers or closes
                if data:
                    self.slow["answers"][data.split(b"\r\n", 1)[0].decode(errors="replace")[:40]] += 1
                    while await reader.read(4096):
                        pass
            except Exception as exc:  # noqa: BLE001
                self.slow["answers"][reason(exc)] += 1
            finally:
                self.slow["open"] -= 1
                self.sample()
                writer.close()
            if not self.running:
                break
            self.slow["closed_by_server"] += 1
            self.slow["lifetimes"].append(time.monotonic() - t0)

    def stats(self) -> dict:
        def pack(d):
            life = d["lifetimes"]
            r = {k: (dict(v) if isinstance(v, Counter) else v) for k, v in d.items() if k != "lifetimes"}
            r["lifetime_median_s"] = statistics.median(life) if life else None
            return r
        return {"ws": pack(self.ws), "slow": pack(self.slow), "window": dict(self.window)}

    async def run(self) -> None:
        cfg = self.cfg
        http = sessions([cfg["addr"]], cfg.get("handshake_timeout", 10))[cfg["addr"]]
        sem = asyncio.Semaphore(cfg.get("concurrency", 200))
        firsts, tasks = [], []
        for _ in range(cfg["ws"]):
            ev = asyncio.Event()
            firsts.append(ev)
            tasks.append(asyncio.create_task(self.ws_slot(http, sem, ev)))
        for _ in range(cfg["slow"]):
            ev = asyncio.Event()
            firsts.append(ev)
            tasks.append(asyncio.create_task(self.slow_slot(sem, ev)))
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in firsts)), cfg.get("open_budget", 60))
        except asyncio.TimeoutError:
            pass
        out({"type": "ready", "open_s": time.monotonic() - t0,
             "unresolved": sum(1 for e in firsts if not e.is_set()), **self.stats()})
        reader = await stdin_lines()
        deadline = time.monotonic() + cfg.get("max_life", 300)
        try:
            while time.monotonic() < deadline:
                try:
                    line = await asyncio.wait_for(reader.readline(), 0.5)
                except asyncio.TimeoutError:
                    self.sample()
                    continue
                if not line:
                    break
                cmd = line.decode().strip()
                if cmd == "window":
                    self.window = {k: None for k in self.window}
                    self.sample()
                elif cmd == "status":
                    self.sample()
                    out({"type": "status", **self.stats()})
                elif cmd == "quit":
                    break
        finally:
            self.running = False
            final = self.stats()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await http.close()
            out({"type": "bye", **final})


def main() -> None:
    cfg = json.loads(open(sys.argv[1]).read())
    mode = {"sockets": SocketsMode, "flood": FloodMode}[cfg["mode"]](cfg)
    asyncio.run(mode.run())
    os._exit(0)


if __name__ == "__main__":
    main()
