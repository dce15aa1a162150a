"""One error shape everywhere, no stack traces, no 500s; ``/health`` and ``/ready``.

api-contract.md, "Conventions" (errors) and "Operations". Every test runs on
SQLite and PostgreSQL; the outage tests point a second app at a closed port.
"""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from flask import Blueprint
from flask_jwt_extended import create_access_token
from flask_restful import Resource

from tasktracker import create_app
from tasktracker.config import TestConfig
from tasktracker.core.api import Api
from tasktracker.extensions import db
from tests.helpers import SECRET, assert_error, case

DOWN_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:1/tasktracker_down"


# --------------------------------------------------------------------------- HTTP-level errors


def test_unknown_routes_are_404_in_shape(client):
    for path in ("/api/nope", "/api/auth/nope", "/nope", "/api/users/1/nope", "/api/"):
        with case(path):
            assert_error(client.get(path), 404, "not_found")
            assert_error(client.post(path, json={}), 404, "not_found")


def test_method_not_allowed_is_405_with_allow(client):
    for method, path, allowed in (("get", "/api/auth/login", {"POST"}),
                                  ("delete", "/api/auth/register", {"POST"}),
                                  ("put", "/api/auth/profile", {"GET", "PATCH"}),
                                  ("delete", "/api/users", {"GET"}),
                                  ("post", "/health", {"GET"})):
        with case(f"{method} {path}"):
            r = getattr(client, method)(path)
            assert_error(r, 405, "method_not_allowed")
            allow = {m.strip() for m in r.headers["Allow"].split(",")}
            assert allowed <= allow, allow
            assert not ({"PUT", "DELETE", "POST", "PATCH"} - allowed) & allow, allow


def test_every_route_answers_the_methods_it_lacks_405_in_shape(app, client):
    """Every rule of the app, each standard method it does not serve (TRACE too): 405
    in the error shape, its ``Allow`` listing what the path serves. (schemathesis'
    coverage phase sends these per documented operation only with
    ``SCHEMATHESIS_CHECKS=all``: tests/test_openapi.py.)"""
    served: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        served.setdefault(rule.rule, set()).update(rule.methods)
    assert len(served) > 50
    for rule, methods in sorted(served.items()):
        path = re.sub(r"<(?:(int|string|path):)?[^<>]+>", lambda m: "1" if m.group(1) == "int" else "x", rule)
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "TRACE"} - methods):
            with case(f"{method} {rule}"):
                r = client.open(path, method=method)
                assert_error(r, 405, "method_not_allowed")
                allow = {m.strip() for m in r.headers["Allow"].split(",")}
                assert allow - {"HEAD", "OPTIONS"} == methods - {"HEAD", "OPTIONS"}, allow


def test_unsupported_media_type_is_415(client):
    for content_type, data in (("text/plain", '{"email": "a@b.c", "password": "x"}'),
                               ("application/xml", "<login/>"),
                               ("multipart/form-data; boundary=x", "--x--"),
                               (None, '{"email": "a@b.c", "password": "x"}')):
        with case(content_type):
            kwargs = {"data": data, **({"content_type": content_type} if content_type else {})}
            assert_error(client.post("/api/auth/login", **kwargs), 415, "unsupported_media_type")


def test_malformed_json_is_400(client):
    for data in ("{", '{"a": }', "{'single': 'quotes'}", "", "\x00", b"\xff\xfe{}", "[" * 50_000,
                 '{"a": ' * 50_000, "[]", "1"):
        with case(repr(data)[:40]):
            r = client.post("/api/auth/login", data=data, content_type="application/json")
            assert_error(r, 400)


def test_body_over_max_content_length_is_413(client, app):
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = b'{"username": "' + b"a" * limit + b'", "password": "x"}'
    r = client.post("/api/auth/login", data=body, content_type="application/json")
    assert_error(r, 413, "payload_too_large")


def test_json_body_over_max_json_bytes_is_413(client, app):
    limit = app.config["MAX_JSON_BYTES"]
    assert limit < app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({"username": "alice", "email": "alice@example.com", "password": "long-enough",
                       "full_name": "x" * limit})
    r = client.post("/api/auth/register", data=body, content_type="application/json")
    assert_error(r, 413, "payload_too_large")
    # Just under the limit is parsed (and then refused by validation, not by size).
    body = json.dumps({"username": "alice", "email": "alice@example.com", "password": "long-enough",
                       "full_name": "x" * (limit - 200)})
    assert_error(client.post("/api/auth/register", data=body, content_type="application/json"), 422)


def test_validation_error_shape(client):
    error = assert_error(client.post("/api/auth/register", json={"email": "nope", "role": "admin"}),
                         422, "validation_error")
    for field in ("username", "email", "password", "role"):
        assert isinstance(error["details"][field], list) and all(isinstance(m, str) for m in error["details"][field])


def test_errors_are_json_even_when_html_is_preferred(client):
    r = client.get("/api/nope", headers={"Accept": "text/html"})
    assert_error(r, 404)


# --------------------------------------------------------------------------- unexpected errors


@pytest.fixture
def boom_client(app, database_url):
    """A separate app (same database) with routes that fail in unexpected ways."""
    boom = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": database_url})

    @boom.get("/boom")
    def plain_boom():
        raise RuntimeError(SECRET)

    class Boom(Resource):
        def get(self):
            raise KeyError(SECRET)

        def post(self):
            # A data error of the database (value out of range, bad encoding...) caused by input.
            raise sa.exc.DataError("INSERT ...", {"v": SECRET}, Exception(SECRET))

        def delete(self):
            raise sa.exc.IntegrityError("INSERT ...", {"v": SECRET}, Exception(SECRET))

    bp = Blueprint("boom", __name__, url_prefix="/api")
    Api(bp).add_resource(Boom, "/boom")
    boom.register_blueprint(bp)
    yield boom.test_client()
    with boom.app_context():
        db.session.remove()
        db.engine.dispose()


def test_unexpected_exception_is_500_without_traceback(boom_client, caplog):
    for method, path in (("get", "/boom"), ("get", "/api/boom"), ("delete", "/api/boom")):
        with case(f"{method} {path}"):
            error = assert_error(getattr(boom_client, method)(path), 500, "internal_error")
            assert error["details"] == {}
    # The details are logged for the operators, not sent to the client.
    assert SECRET in caplog.text


def test_database_data_error_is_422_not_500(boom_client):
    assert_error(boom_client.post("/api/boom", json={}), 422)


# --------------------------------------------------------------------------- outages


@pytest.fixture
def down_client(app):
    """A separate app whose database is PostgreSQL on a closed port."""
    down = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": DOWN_DATABASE_URL,
                                   "JWT_SECRET_KEY": app.config["JWT_SECRET_KEY"]})
    yield down
    with down.app_context():
        db.session.remove()
        db.engine.dispose()


def test_database_outage_is_503(down_client, auth):
    session = auth.user("alice")  # a real token from the working app, same signing key
    client = down_client.test_client()
    calls = [
        ("register", client.post("/api/auth/register", json={"username": "bob", "email": "bob@example.com",
                                                             "password": "long-enough"})),
        ("login", client.post("/api/auth/login", json={"username": "alice", "password": "correct-horse-9"})),
        ("profile", client.get("/api/auth/profile", headers=session.headers)),
        ("users", client.get("/api/users", headers=session.headers)),
    ]
    for label, r in calls:
        with case(label):
            error = assert_error(r, 503, "database_unavailable")
            assert error["details"] == {"dependency": "database"}
            assert r.headers["Retry-After"].isdigit()
    # Requests that need no database still answer.
    assert client.get("/health").json == {"status": "ok"}
    assert_error(client.get("/api/auth/profile"), 401)


def test_exhausted_connection_pool_is_503_not_500(tmp_path):
    """Every pooled connection busy past ``pool_timeout`` (overload): 503 in the error
    shape with Retry-After, and the request's session is released for the next one."""
    busy = create_app(TestConfig, {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'pool.db'}",
        "SQLALCHEMY_ENGINE_OPTIONS": {"poolclass": sa.pool.QueuePool, "pool_size": 1, "max_overflow": 0,
                                      "pool_timeout": 0.2}})
    client = busy.test_client()
    body = {"username": "bob", "email": "bob@example.com", "password": "long-enough"}
    with busy.app_context():
        db.create_all()
        held = db.engine.connect()  # the pool's only connection
        try:
            r = client.post("/api/auth/register", json=body)
            error = assert_error(r, 503, "database_unavailable")
            assert error["details"] == {"dependency": "database"} and r.headers["Retry-After"] == "1"
        finally:
            held.close()
        r = client.post("/api/auth/register", json=body)  # connection free again: served
        assert r.status_code == 201, r.get_data(as_text=True)
        db.session.remove()
        db.engine.dispose()


def test_ready_names_the_failed_database(down_client):
    client = down_client.test_client()
    r = client.get("/ready")
    error = assert_error(r, 503)
    assert "database" in error["message"]
    assert "database" in error["details"]["failed"]
    assert DOWN_DATABASE_URL not in r.get_data(as_text=True)


def test_token_minted_for_outage_app_is_valid_when_db_returns(app, client, auth):
    """Control for the outage test: the same kind of token works against the live database."""
    session = auth.user("alice")
    with app.test_request_context():
        token = create_access_token(identity=str(session.id), additional_claims={"sid": "nope"})
    assert_error(client.get("/api/auth/profile", headers={"Authorization": f"Bearer {token}"}), 401)
    assert client.get("/api/auth/profile", headers=session.headers).status_code == 200


# --------------------------------------------------------------------------- operations


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json == {"status": "ok"}


def test_ready(client):
    r = client.get("/ready")
    assert r.status_code == 200, r.json
    assert r.json["status"] == "ready"
    assert r.json["checks"]["database"] == "ok"
    assert "broker" in r.json["checks"]
    assert all(value == "ok" for value in r.json["checks"].values())
