"""End to end over real HTTP: the production web server (gunicorn with
``gunicorn.conf.py``) on a fresh PostgreSQL database whose schema comes from
``flask db upgrade`` (run as a subprocess, like an operator would).

Walks the README quickstart: register, login, create a task with an offset due
date, list with filters, assign, status changes, a stale ``If-Match`` (412),
soft delete, restore, logout. Also checks that a websocket reaches Socket.IO
through gunicorn's worker.
"""

from __future__ import annotations

import pytest
import requests

from tests.procs import PASSWORD, Web, base_env, migrated_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Base URL of a gunicorn serving ``wsgi:app`` on a fresh, migrated PostgreSQL database."""
    logs = tmp_path_factory.mktemp("e2e")
    database_url, drop = migrated_database(logs, cli=True)
    web = Web("gunicorn", base_env(DATABASE_URL=database_url, SOCKETIO_ASYNC_MODE="gevent",
                                   UPLOAD_DIR=str(logs / "uploads")), logs)
    try:
        yield web.wait_ready(timeout=60).url
    finally:
        web.stop(timeout=40)
        drop()


class Client:
    """A logged-in user talking to the server."""

    def __init__(self, base: str, username: str):
        self.base = base
        r = requests.post(f"{base}/api/auth/register", timeout=10,
                          json={"username": username, "email": f"{username}@example.com",
                                "password": PASSWORD, "full_name": username.title()})
        assert r.status_code == 201, r.text
        self.user = r.json()
        r = requests.post(f"{base}/api/auth/login", json={"email": f"{username}@example.com",
                                                          "password": PASSWORD}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["token_type"] == "Bearer" and body["user"]["id"] == self.user["id"]
        self.access, self.refresh = body["access_token"], body["refresh_token"]

    @property
    def id(self) -> int:
        return self.user["id"]

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.access}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.base}{path}", headers=headers, timeout=10, **kwargs)


def test_health_and_ready(server):
    r = requests.get(f"{server}/health", timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = requests.get(f"{server}/ready", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"
    r = requests.get(f"{server}/api/openapi.json", timeout=5)
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.")


def test_task_lifecycle_over_http(server):
    alice, bob = Client(server, "alice"), Client(server, "bob")

    # Create with an offset due date -> stored and returned in UTC.
    r = alice.request("POST", "/api/tasks", json={
        "title": "Write the quarterly report", "description": "Numbers for Q4", "priority": "high",
        "due_at": "2026-12-01T09:00:00+01:00", "reminders": ["2026-11-30T09:00:00+01:00"]})
    assert r.status_code == 201, r.text
    task = r.json()
    tid = task["id"]
    assert task["due_at"] == "2026-12-01T08:00:00Z"
    assert [rem["remind_at"] for rem in task["reminders"]] == ["2026-11-30T08:00:00Z"]
    assert (task["status"], task["priority"], task["owner"]["id"], task["assignee"]) == \
        ("todo", "high", alice.id, None)
    assert r.headers["Location"].endswith(f"/api/tasks/{tid}")
    assert r.headers["ETag"] == f'"{task["version"]}"'
    assert task["created_at"].endswith("Z")

    r = alice.request("POST", "/api/tasks", json={"title": "Naive", "due_at": "2026-12-01T09:00:00"})
    assert r.status_code == 422 and "due_at" in r.json()["error"]["details"]
    r = alice.request("POST", "/api/tasks", json={"title": "Water the plants", "priority": "low"})
    assert r.status_code == 201
    other_id = r.json()["id"]

    # List with filters.
    r = alice.request("GET", "/api/tasks", params={"status": "todo", "priority": "high",
                                                   "due_before": "2026-12-02T00:00:00+00:00"})
    assert r.status_code == 200, r.text
    page = r.json()
    assert [t["id"] for t in page["items"]] == [tid]
    assert (page["total"], page["page"], page["pages"]) == (1, 1, 1)
    r = alice.request("GET", "/api/tasks", params={"q": "plants"})
    assert [t["id"] for t in r.json()["items"]] == [other_id]
    r = alice.request("GET", "/api/tasks", params={"sort": "-priority", "per_page": 1})
    assert r.json()["total"] == 2 and r.json()["pages"] == 2 and r.json()["items"][0]["id"] == tid
    assert alice.request("GET", "/api/tasks", params={"status": "nope"}).status_code == 422
    assert bob.request("GET", f"/api/tasks/{tid}").status_code == 404  # not visible yet

    # Assign to bob: he sees it and finds it with assignee_id=me.
    r = alice.request("PATCH", f"/api/tasks/{tid}/assign", json={"assignee_id": bob.id})
    assert r.status_code == 200, r.text
    assert r.json()["assignee"]["id"] == bob.id
    r = bob.request("GET", "/api/tasks", params={"assignee_id": "me"})
    assert [t["id"] for t in r.json()["items"]] == [tid]

    # Status changes by the assignee; an invalid transition is a 409.
    r = bob.request("PATCH", f"/api/tasks/{tid}/status", json={"status": "in_progress"})
    assert r.status_code == 200 and r.json()["status"] == "in_progress", r.text
    r = bob.request("PATCH", f"/api/tasks/{tid}/status", json={"status": "done"})
    assert r.status_code == 200 and r.json()["completed_at"] is not None
    r = bob.request("PATCH", f"/api/tasks/{tid}/status", json={"status": "todo"})
    assert r.status_code == 409
    r = bob.request("PATCH", f"/api/tasks/{tid}/status", json={"status": "in_progress"})
    assert r.status_code == 200 and r.json()["completed_at"] is None
    version = r.json()["version"]
    assert r.headers["ETag"] == f'"{version}"'

    # A stale If-Match changes nothing; the current one works.
    r = alice.request("PATCH", f"/api/tasks/{tid}", json={"title": "Stale write"}, headers={"If-Match": '"1"'})
    assert r.status_code == 412, r.text
    assert r.json()["error"]["code"]
    r = alice.request("GET", f"/api/tasks/{tid}")
    assert r.json()["title"] == "Write the quarterly report" and r.json()["version"] == version
    r = alice.request("PATCH", f"/api/tasks/{tid}", json={"title": "Write the Q4 report"},
                      headers={"If-Match": f'"{version}"'})
    assert r.status_code == 200 and r.json()["title"] == "Write the Q4 report"
    assert r.json()["version"] > version

    # Soft delete (owner only), the trash, restore.
    assert bob.request("DELETE", f"/api/tasks/{tid}").status_code == 403
    r = alice.request("DELETE", f"/api/tasks/{tid}")
    assert r.status_code == 204 and r.content == b""
    assert alice.request("GET", f"/api/tasks/{tid}").status_code == 404
    assert [t["id"] for t in alice.request("GET", "/api/tasks").json()["items"]] == [other_id]
    trash = alice.request("GET", "/api/tasks", params={"deleted": "only"}).json()["items"]
    assert [t["id"] for t in trash] == [tid] and trash[0]["deleted_at"].endswith("Z")
    r = alice.request("PATCH", f"/api/tasks/{tid}/restore")
    assert r.status_code == 200 and r.json()["deleted_at"] is None
    assert alice.request("GET", f"/api/tasks/{tid}").status_code == 200

    # Logout: both tokens of the session stop working; bob is unaffected.
    r = alice.request("POST", "/api/auth/logout")
    assert r.status_code == 204
    r = alice.request("GET", "/api/auth/profile")
    assert r.status_code == 401 and r.json()["error"]["code"]
    r = requests.post(f"{server}/api/auth/refresh", headers={"Authorization": f"Bearer {alice.refresh}"},
                      timeout=10)
    assert r.status_code == 401
    assert bob.request("GET", "/api/auth/profile").status_code == 200


def test_websocket_through_gunicorn(server):
    """gunicorn's threaded worker carries a real websocket to Socket.IO; bad tokens are refused."""
    import socketio

    carol = Client(server, "carol")
    client = socketio.Client(reconnection=False)
    try:
        client.connect(server, transports=["websocket"], auth={"token": carol.access}, wait_timeout=10)
        assert client.connected and client.transport() == "websocket"
    finally:
        client.disconnect()

    bad = socketio.Client(reconnection=False)
    with pytest.raises(socketio.exceptions.ConnectionError):
        bad.connect(server, transports=["websocket"], auth={"token": "not-a-token"}, wait_timeout=10)
    assert not bad.connected
