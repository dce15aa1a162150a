#!/usr/bin/env python
"""Watch TaskTracker's real-time events from a terminal.

Logs in over REST, connects to Socket.IO with the access token (websocket
transport) and prints every event it receives (``notification:new``,
``task:*``, ``comment:created``, ``presence:update``...) with a UTC timestamp.
Reconnects by itself and then asks for the notifications it missed
(``auth={"token", "last_seq"}``). Needs ``python-socketio[client]`` (and
``requests``), both in requirements.txt: run it with the project's virtualenv.

    python examples/socket_client.py http://127.0.0.1:5000 alice@example.com 'correct-horse-9'
    python examples/socket_client.py URL EMAIL PASSWORD --subscribe 12 --subscribe 13 --last-seq 0

Stop with Ctrl+C.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

import requests
import socketio


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log(kind: str, payload=None) -> None:
    text = "" if payload is None else json.dumps(payload, ensure_ascii=False, sort_keys=True)
    print(f"{now()}  {kind:<20} {text}", flush=True)


def login(base_url: str, email: str, password: str) -> dict:
    """``POST /api/auth/login`` -> the token pair and the user (exits on failure)."""
    response = requests.post(f"{base_url}/api/auth/login", json={"email": email, "password": password},
                             timeout=10)
    if response.status_code != 200:
        sys.exit(f"login failed: HTTP {response.status_code} {response.text}")
    return response.json()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="server base URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("email")
    parser.add_argument("password")
    parser.add_argument("--subscribe", type=int, action="append", default=[], metavar="TASK_ID",
                        help="also subscribe to a task's events (task:subscribe), repeatable")
    parser.add_argument("--last-seq", type=int, default=None,
                        help="replay notifications after this seq on the first connect")
    args = parser.parse_args(argv)
    base_url = args.url.rstrip("/")

    session = login(base_url, args.email, args.password)
    tokens = {"access": session["access_token"], "refresh": session["refresh_token"]}
    log("logged-in", {"user_id": session["user"]["id"], "username": session["user"]["username"]})
    state = {"last_seq": args.last_seq}

    sio = socketio.Client(reconnection=True, reconnection_delay=1, reconnection_delay_max=10)

    def auth() -> dict:
        # called on every (re)connect: resume from the last notification seen
        payload = {"token": tokens["access"]}
        if state["last_seq"] is not None:
            payload["last_seq"] = state["last_seq"]
        return payload

    @sio.event
    def connect():
        log("connected", {"sid": sio.get_sid()})
        for task_id in args.subscribe:
            log("task:subscribe", {"task_id": task_id, "ack": sio.call("task:subscribe", {"task_id": task_id})})

    @sio.event
    def connect_error(data):
        log("connect_error", data)
        code = (data or {}).get("data", {}).get("code") if isinstance(data, dict) else None
        if code in ("token_expired", "invalid_token"):  # expired: get a new token, retry on reconnect
            r = requests.post(f"{base_url}/api/auth/refresh", timeout=10,
                              headers={"Authorization": f"Bearer {tokens['refresh']}"})
            if r.status_code == 200:
                tokens["access"] = r.json()["access_token"]
                log("token-refreshed")

    @sio.event
    def disconnect(reason=None):
        log("disconnected", {"reason": str(reason)} if reason else None)

    @sio.on("*")
    def any_event(event, *data):
        payload = data[0] if len(data) == 1 else list(data)
        if event == "notification:new" and isinstance(payload, dict) and isinstance(payload.get("seq"), int):
            state["last_seq"] = max(state["last_seq"] or 0, payload["seq"])
        log(event, payload)

    try:
        sio.connect(base_url, auth=auth, transports=["websocket"], wait_timeout=10)
        sio.wait()
    except socketio.exceptions.ConnectionError as exc:
        log("connect-failed", {"error": str(exc)})
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        if sio.connected:
            sio.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
