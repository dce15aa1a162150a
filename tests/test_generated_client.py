"""A Python client generated from ``/api/openapi.json`` works against the real server.

openapi-python-client (pinned in requirements-dev.txt) generates a client from
the app's document once per session; any warning it prints fails the test (it
drops models and operations it cannot parse, e.g. on colliding enum names). The
generated client then runs a short workflow over HTTP against the app served by
Werkzeug on an ephemeral port (SQLite): register, login, create a task, list,
change the status, comment. Responses are parsed into the generated models, so
a response that breaks its documented schema (a missing ``required`` field, an
untyped nullable reference, an undocumented status) fails here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tasktracker import create_app
from tasktracker.config import TestConfig
from tasktracker.core.db import import_all_models
from tasktracker.extensions import db
from tasktracker.openapi import build_spec

PACKAGE = "tasktracker_client"


@pytest.fixture(scope="session")
def client_package(tmp_path_factory):
    """The generated client package (imported), from the document of a test app."""
    out = tmp_path_factory.mktemp("generated")
    spec_path = out / "openapi.json"
    spec_path.write_text(json.dumps(build_spec(create_app(TestConfig))))
    bin_dir = Path(sys.executable).parent
    result = subprocess.run(
        [str(bin_dir / "openapi-python-client"), "generate", "--path", str(spec_path),
         "--output-path", str(out / PACKAGE), "--meta", "none"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"},  # ruff
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    noise = [line for line in output.splitlines() if line.strip() and not line.startswith("Generating ")]
    assert noise == [], "openapi-python-client warned:\n" + output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    """The app (SQLite file) served over HTTP by Werkzeug in a thread."""
    tmp = tmp_path_factory.mktemp("client-server")
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'client.db'}",
                                  "UPLOAD_DIR": str(tmp / "uploads")})
    import_all_models()
    with app.app_context():
        db.create_all()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _call(module, expected_status: int, **kwargs):
    """``module.sync_detailed(**kwargs)``: assert the status, return the parsed body."""
    response = module.sync_detailed(**kwargs)
    assert response.status_code == expected_status, response.content
    return response.parsed


def _operation(tag: str, operation_id: str):
    """The generated module of an operation (``api/<tag>/<operationId>.py``)."""
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{operation_id}")


@pytest.mark.integration
def test_workflow_through_generated_client(client_package, server_url):
    models = importlib.import_module(f"{PACKAGE}.models")
    auth_register, auth_login = _operation("auth", "auth_register"), _operation("auth", "auth_login")
    tasks_create, tasks_list = _operation("tasks", "tasks_create"), _operation("tasks", "tasks_list")
    tasks_update_status = _operation("tasks", "tasks_update_status")
    comments_create = _operation("comments", "comments_create")

    anonymous = client_package.Client(base_url=server_url, raise_on_unexpected_status=True)
    user = _call(auth_register, 201, client=anonymous, body=models.Register(
        username="genclient", email="genclient@example.com", password="correct horse battery"))
    assert isinstance(user, models.User) and user.username == "genclient"

    tokens = _call(auth_login, 200, client=anonymous, body=models.Login(
        password="correct horse battery", username="genclient"))
    assert isinstance(tokens, models.TokenPair) and tokens.user.id == user.id
    client = client_package.AuthenticatedClient(base_url=server_url, token=tokens.access_token,
                                                raise_on_unexpected_status=True)

    response = tasks_create.sync_detailed(client=client, body=models.TaskCreate(
        title="Write the report", priority=models.TaskPriority.HIGH))
    assert response.status_code == 201 and response.headers["Location"].endswith(f"/{response.parsed.id}")
    task = response.parsed
    assert isinstance(task, models.Task)
    assert (task.status, task.assignee, task.owner.id) == (models.TaskStatus.TODO, None, user.id)

    page = _call(tasks_list, 200, client=client, status=[models.TaskStatus.TODO])
    assert isinstance(page, models.TaskPage)
    assert [item.id for item in page.items] == [task.id] and page.total == 1

    moved = _call(tasks_update_status, 200, task_id=task.id, client=client, if_match=f'"{task.version}"',
                  body=models.TaskStatusUpdate(status=models.TaskStatus.IN_PROGRESS))
    assert isinstance(moved, models.Task)
    assert (moved.status, moved.version) == (models.TaskStatus.IN_PROGRESS, task.version + 1)

    comment = _call(comments_create, 201, task_id=task.id, client=client,
                    body=models.CommentBody(body="Draft is up."))
    assert isinstance(comment, models.Comment) and comment.body == "Draft is up."
    assert isinstance(comment.author, models.UserRef) and comment.author.id == user.id

    stale = tasks_update_status.sync_detailed(
        task_id=task.id, client=client, if_match=f'"{task.version}"',
        body=models.TaskStatusUpdate(status=models.TaskStatus.DONE))
    assert stale.status_code == 412 and isinstance(stale.parsed, models.Error)
    assert stale.parsed.error.code == "precondition_failed"
