"""Over-long and oversized requests get the API's error shape from every server that
can answer them (api-contract.md "Conventions"; README "Configuration", request limits):

- the embedded server and the gateways (gunicorn): request line over 4094 bytes -> 414,
  a header field over 8190 bytes or more than 100 fields -> 431, as JSON;
- nginx (deploy/nginx.conf): request or header line over 8 KiB -> 414 / 400, a body
  over ``client_max_body_size`` -> 413, as JSON;
- a 413 from the app never says ``Connection: keep-alive`` and then drops the
  connection: gunicorn gevent keeps it usable, granian says ``close``.

Real processes on a migrated SQLite file (the servers are what is tested here).
"""

from __future__ import annotations

import json
import socket

import pytest
import requests

from tests.conftest import RABBITMQ_URL
from tests.procs import ApiServer, Nginx, Web, base_env, migrate, nginx_binary

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("http-limits")
    url = f"sqlite:///{log_dir / 'limits.db'}"
    env = base_env(DATABASE_URL=url, SOCKETIO_ASYNC_MODE="gevent", UPLOAD_DIR=str(log_dir / "uploads"))
    migrate(url, log_dir, env)
    nginx_binary()
    procs = []
    try:
        embedded = Web("embedded", env, log_dir)
        procs.append(embedded)
        api = ApiServer("api", {**env, "SOCKETIO_MESSAGE_QUEUE": RABBITMQ_URL}, log_dir)
        procs.append(api)
        embedded.wait_ready()
        api.wait_ready()
        proxy = Nginx("nginx", log_dir, [api.port], [embedded.port])
        procs.append(proxy)
        proxy.wait_ready()
        yield {"embedded": embedded, "api": api, "nginx": proxy}
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(autouse=True)
def _sqlite_only(database_url):
    if not database_url.startswith("sqlite"):
        pytest.skip("server limits do not depend on the database; the SQLite half runs them")


def _assert_error_shape(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"] and body["error"]["details"] == {}


def test_gunicorn_limits_answer_json(servers):
    base = servers["embedded"].url
    _assert_error_shape(requests.get(f"{base}/api/tasks?q={'x' * 5000}", timeout=5), 414, "uri_too_long")
    _assert_error_shape(requests.get(f"{base}/health", headers={"X-Big": "y" * 9000}, timeout=5),
                        431, "header_fields_too_large")
    many = {f"X-Field-{i}": "v" for i in range(120)}
    _assert_error_shape(requests.get(f"{base}/health", headers=many, timeout=5), 431, "header_fields_too_large")
    assert requests.get(f"{base}/health", headers={"X-Ok": "y" * 4000}, timeout=5).status_code == 200


def test_nginx_limits_answer_json(servers):
    base = servers["nginx"].url
    _assert_error_shape(requests.get(f"{base}/api/tasks?q={'x' * 9000}", timeout=5), 414, "uri_too_long")
    _assert_error_shape(requests.get(f"{base}/health", headers={"X-Big": "y" * 9000}, timeout=5),
                        400, "bad_request")
    big = b"0" * (12 * 1024 * 1024)
    r = requests.post(f"{base}/api/tasks", data=big, headers={"Content-Type": "application/json"}, timeout=30)
    _assert_error_shape(r, 413, "payload_too_large")
    assert requests.get(f"{base}/health", timeout=5).status_code == 200


def _read_response(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 response with a Content-Length: (head, body); None if the server
    closed the connection first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head, body


def _oversized_json_then_health(port: int):
    """POST a 2 MiB JSON body (over MAX_JSON_BYTES) on one connection, then a GET /health
    on the same connection. Returns (the 413's head and body, the second response or
    None if the server closed the connection)."""
    body = b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /api/auth/register HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        s.sendall(body[:65536])
        first = _read_response(s)
        try:
            s.sendall(body[65536:])
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            second = _read_response(s)
        except OSError:
            second = None
    return first, second


@pytest.mark.parametrize("name", ["embedded", "api"])
def test_a_413_tells_the_truth_about_the_connection(servers, name):
    first, second = _oversized_json_then_health(servers[name].port)
    assert first is not None
    head, body = first
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    if b"connection: close" in head.lower():
        assert second is None  # it said so, and closed
    else:  # keep-alive (explicit or HTTP/1.1's default): the next request is answered
        assert second is not None and second[0].startswith(b"HTTP/1.1 200"), (head, second)
