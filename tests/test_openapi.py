"""``/api/openapi.json`` describes the API exactly as implemented (api-contract.md).

* The document is valid OpenAPI 3 (schemathesis' own meta-schema validation) and
  every ``$ref`` resolves.
* Every ``/api`` rule of the app (every method) is documented, and nothing is
  documented that does not exist.
* ``/api/docs`` renders Swagger UI and its assets load.
* A bounded schemathesis run (positive and negative cases) over every operation
  that exists at run time, authenticated as a site admin: no 500, responses
  match their documented schema, status codes are documented.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urljoin

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tasktracker import create_app
from tasktracker.auth.models import User
from tasktracker.auth.tokens import issue_tokens
from tasktracker.comments.models import Comment
from tasktracker.config import TestConfig
from tasktracker.extensions import db
from tests.factories import TaskFactory, TeamFactory, UserFactory, add_member

SKIP_ENDPOINTS = {"static", "openapi.spec", "openapi.docs", "openapi.docs_asset"}
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _spec(client) -> dict:
    r = client.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.mimetype == "application/json"
    return r.json


def _openapi_path(rule: str) -> str:
    """Flask ``/api/tasks/<int:task_id>`` -> OpenAPI ``/api/tasks/{task_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _api_rules(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP_ENDPOINTS or not rule.rule.startswith("/api/"):
            continue
        for method in rule.methods - IGNORED_METHODS:
            found.add((_openapi_path(rule.rule), method.lower()))
    return found


def _spec_operations(spec: dict) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "patch", "delete"}
    return {(path, method) for path, item in spec["paths"].items() for method in item if method in methods}


def test_spec_is_valid_openapi3(client):
    spec = _spec(client)
    assert spec["openapi"].startswith("3.")
    loaded = schemathesis.openapi.from_dict(spec)
    loaded.validate()  # raises on a document that breaks the OpenAPI 3 meta-schema
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in set(refs(spec)):
        assert ref.startswith("#/"), ref
        target = spec
        for part in ref[2:].split("/"):
            assert isinstance(target, dict) and part in target, f"unresolvable $ref {ref}"
            target = target[part]


def test_every_api_rule_is_documented(app, client):
    spec = _spec(client)
    implemented = _api_rules(app)
    documented = _spec_operations(spec)
    assert implemented, "no /api rules found"
    assert implemented - documented == set(), "implemented but not in /api/openapi.json"
    assert documented - implemented - {("/health", "get"), ("/ready", "get")} == set(), \
        "documented but not implemented"


def test_every_operation_documents_its_errors(client):
    """Each operation documents a success response; secured ones document 401; bodies 415/422."""
    spec = _spec(client)
    problems = []
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            codes = {str(c) for c in op.get("responses", {})}
            if not any(c.startswith("2") or c.startswith("3") for c in codes):
                problems.append(f"{method.upper()} {path}: no success response")
            secured = op.get("security", spec.get("security")) not in (None, [])
            if path.startswith("/api/") and secured and "401" not in codes:
                problems.append(f"{method.upper()} {path}: secured but no 401")
            body = op.get("requestBody", {}).get("content", {})
            if "application/json" in body and not {"415", "422"} <= codes:
                problems.append(f"{method.upper()} {path}: JSON body but no 415/422")
            if "{" in path and path.startswith("/api/") and "404" not in codes:
                problems.append(f"{method.upper()} {path}: path parameter but no 404")
    assert problems == []


def test_docs_page_and_assets(client):
    r = client.get("/api/docs")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    assert 'id="swagger-ui"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        url = urljoin("http://localhost/api/docs", asset)
        path = url.replace("http://localhost", "")
        res = client.get(path)
        assert res.status_code == 200, path
        assert len(res.data) > 1000, path
        expected = "javascript" if asset.endswith(".js") else "css"
        assert expected in res.mimetype, (path, res.mimetype)
    # The spec URL the page loads resolves too.
    spec_url = re.search(r'url:\s*"([^"]+)"', html).group(1)
    assert client.get(urljoin("http://localhost/api/docs", spec_url).replace("http://localhost", "")
                      ).status_code == 200
    # No path traversal out of the asset directory.
    assert client.get("/api/docs/../../../../etc/passwd").status_code == 404
    assert client.get("/api/docs/%2e%2e/%2e%2e/etc/passwd").status_code == 404


# ------------------------------------------------------------------ schemathesis

class FuzzUser:
    """A site admin whose token is re-issued before every case, so that a fuzzed
    logout, deactivation or role change cannot starve the remaining operations."""

    def __init__(self):
        self.user = UserFactory(username="fuzzer", role="admin")

    def headers(self) -> dict:
        user = db.session.get(User, self.user.id)
        user.active, user.role = True, "admin"
        tokens = issue_tokens(user)
        db.session.commit()
        return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def fuzz_user(app):
    """The fuzzing admin plus a little data its ids can hit (team, tasks, comment)."""
    fuzzer = FuzzUser()
    other = UserFactory(username="teammate")
    team = TeamFactory(owner=fuzzer.user)
    add_member(team, other)
    for i in range(3):
        task = TaskFactory(owner=fuzzer.user, team_id=team.id if i else None, assignee=other if i == 2 else None)
    db.session.add(Comment(task_id=task.id, author_id=fuzzer.user.id, body="hello"))
    db.session.commit()
    return fuzzer


# The operations are read from an app built at collection time (the spec does not depend
# on the database), so each operation is its own test item.
_spec_app = create_app(TestConfig)

#: Rejections of schema-valid requests that depend on stored data (or, for login, on two
#: fields at once), which the schema does not express (schemathesis'
#: positive_data_acceptance, ST202): each is documented (422 or 412) on its operation. The defaults (2xx, 3xx, 401, 403, 404, 409, 429, 5xx) stay.
DATA_DEPENDENT_REJECTIONS = {
    # team membership and active assignees (api-contract.md, "Tasks")
    "tasks_create": [422], "tasks_replace": [412, 422], "tasks_update": [412, 422],
    "tasks_assign": [412, 422],
    # If-Match naming a version that is not the current one
    "tasks_update_status": [412], "tasks_delete": [412],
    # a new password needs the right current_password
    "auth_profile_update": [422],
    # cross-field: email or username (an anyOf would give generated clients two body types)
    "auth_login": [422],
}
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _spec_app, config=SchemathesisConfig.from_dict({
    "operations": [
        {"include-operation-id": operation_id,
         "checks": {"positive_data_acceptance": {"expected-statuses": _ACCEPTED + [str(s) for s in statuses]}}}
        for operation_id, statuses in DATA_DEPENDENT_REJECTIONS.items()
    ],
}))


# Bounded so the run takes a couple of minutes; raise it locally with
# SCHEMATHESIS_MAX_EXAMPLES=100 make test PYTEST_ARGS=tests/test_openapi.py
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))


# One database: the document and the validation do not depend on it; PostgreSQL is
# the stricter one (NUL characters, integer ranges, encodings) and the production one.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_spec(case, app, fuzz_user):
    """Every check schemathesis has (``--checks all``), positive and negative cases."""
    case.call_and_validate(app=app, headers=fuzz_user.headers())
