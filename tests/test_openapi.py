"""``/api/openapi.json`` describes the API exactly as implemented (api-contract.md).

* The document is valid OpenAPI 3 (schemathesis' own meta-schema validation) and
  every ``$ref`` resolves.
* Every ``/api`` rule of the app (every method) is documented, and nothing is
  documented that does not exist; every operation documents its errors.
* The shapes client generators need (operationIds, required fields, nullable
  references, named enums, media types; tests/test_generated_client.py runs one)
  and the text rules as patterns.
* ``/api/docs`` renders Swagger UI and its assets load.
* A bounded schemathesis run (no 500, responses, statuses, media types and headers
  as documented, schema-valid requests accepted, invalid ones refused; every check
  with ``SCHEMATHESIS_CHECKS=all``) over every operation, authenticated as a site
  admin, on PostgreSQL only.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urljoin

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import ignored_auth, missing_required_header, unsupported_method

from tasktracker import create_app
from tasktracker.auth.models import User
from tasktracker.auth.tokens import issue_tokens
from tasktracker.comments.models import Comment
from tasktracker.config import TestConfig
from tasktracker.extensions import db
from tasktracker.tasks.models import Task
from tasktracker.teams.models import Team, TeamMember
from tests.factories import password_hash, insert_rows

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


def test_spec_suits_client_generators(client):
    """What openapi-python-client needs (tests/test_generated_client.py runs it): a
    unique operationId everywhere, 503 documented everywhere, JSON or binary media
    types only, every field of a response schema required, nullable references as
    ``allOf: [$ref]``, one enum component per enum that several schemas share."""
    spec = _spec(client)
    ids = [op.get("operationId") for item in spec["paths"].values() for op in item.values()]
    assert None not in ids and len(ids) == len(set(ids))
    assert TUNED_OPERATIONS <= set(ids)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    schemas = spec["components"]["schemas"]
    media_types = set()
    for item in spec["paths"].values():
        for op in item.values():
            assert "503" in op["responses"], op["operationId"]
            for response in op["responses"].values():
                media_types |= set(response.get("content", {}))
            media_types |= set(op.get("requestBody", {}).get("content", {}))
    assert media_types == {"application/json", "application/octet-stream", "multipart/form-data",
                           "text/csv", "text/calendar"}  # v1.1: the CSV export, the calendar feed
    for name in ("Task", "TaskPage", "Comment", "Attachment", "User", "Team", "Notification"):
        assert sorted(schemas[name]["required"]) == sorted(schemas[name]["properties"]), name
    for name, field in (("Comment", "author"), ("Attachment", "uploaded_by"), ("Task", "assignee")):
        prop = schemas[name]["properties"][field]
        assert prop["nullable"] is True and prop["allOf"] == [{"$ref": "#/components/schemas/UserRef"}]
    assert schemas["TaskStatus"] == {"type": "string", "enum": ["todo", "in_progress", "done"]}
    for name in ("Task", "TaskCreate", "TaskPatch", "TaskStatusUpdate"):
        assert schemas[name]["properties"]["status"] == {"$ref": "#/components/schemas/TaskStatus"}


def test_spec_states_the_text_rules(client):
    """The rules schemathesis would otherwise see rejecting schema-valid requests
    (ST202) are patterns in the document, and the code agrees with them."""
    spec = _spec(client)
    schemas = spec["components"]["schemas"]
    not_blank = re.compile(schemas["CommentBody"]["properties"]["body"]["pattern"])
    assert not not_blank.search("a\x00") and not not_blank.search("  \t") and not_blank.search(" a ")
    assert re.fullmatch(schemas["TaskCreate"]["properties"]["description"]["pattern"], "ok")
    assert not re.fullmatch(schemas["TaskCreate"]["properties"]["description"]["pattern"], "a\x00")
    for component, field in (("TeamCreate", "name"), ("TaskCreate", "title")):
        assert schemas[component]["properties"][field]["pattern"] == not_blank.pattern
    timezone = re.compile(schemas["ProfileUpdate"]["properties"]["timezone"]["pattern"])
    assert timezone.fullmatch("Europe/Paris") and timezone.fullmatch("Etc/GMT+1")
    assert not timezone.fullmatch("Mars/Olympus")
    ops = spec["paths"]["/api/tasks/{task_id}"]
    if_match = next(p for p in ops["patch"]["parameters"] if p["name"] == "If-Match")
    assert [bool(re.fullmatch(if_match["schema"]["pattern"], v))
            for v in ('"3"', '"3", "4"', "*", "3", 'W/"3"', "")] == [True, True, True, False, False, False]
    listed = {p["name"]: p for p in spec["paths"]["/api/tasks"]["get"]["parameters"]}
    assert listed["assignee_id"]["schema"]["anyOf"][1] == {"type": "string", "enum": ["me"]}
    assert re.fullmatch(listed["sort"]["schema"]["pattern"], "-priority, due_at")
    assert not re.fullmatch(listed["sort"]["schema"]["pattern"], "colour")


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
    """A site admin whose access token is re-issued (and role and active flag reset)
    before every case of the operations that can end its session or demote it
    (:data:`SESSION_OPERATIONS`), so that a fuzzed logout, deactivation or role change
    cannot starve the remaining cases; the other operations reuse one token."""

    def __init__(self, user_id: int):
        self.user_id = user_id
        self._headers = None

    def headers(self, operation_id: str) -> dict:
        if self._headers is None or operation_id.startswith(SESSION_OPERATIONS):
            user = db.session.get(User, self.user_id)
            user.active, user.role = True, "admin"
            tokens = issue_tokens(user)
            db.session.commit()
            self._headers = {"Authorization": f"Bearer {tokens['access_token']}"}
        return self._headers


#: operationId prefixes of everything that can revoke the fuzzer's session or change its
#: role or active flag (logout, password change, reset, users_update...).
SESSION_OPERATIONS = ("auth_", "users_")


@pytest.fixture
def fuzz_user(app):
    """The fuzzing admin plus a little data its ids can hit (team, tasks, comment): one
    INSERT per table, as the fixture runs once per operation."""
    fuzzer, other = insert_rows(User, [
        {"username": name, "email": f"{name}@example.com", "password_hash": password_hash(), "role": role}
        for name, role in (("fuzzer", "admin"), ("teammate", "member"))])
    [team] = insert_rows(Team, [{"name": "Fuzz team", "owner_id": fuzzer}])
    insert_rows(TeamMember, [{"team_id": team, "user_id": fuzzer, "role": "owner"},
                             {"team_id": team, "user_id": other, "role": "member"}])
    *_, task = insert_rows(Task, [{"title": f"Task {i}", "owner_id": fuzzer, "team_id": team if i else None,
                                   "assignee_id": other if i == 2 else None} for i in range(3)])
    insert_rows(Comment, [{"task_id": task, "author_id": fuzzer, "body": "hello"}])
    db.session.commit()
    return FuzzUser(fuzzer)


# The operations are read from an app built at collection time (the spec does not depend
# on the database), so each operation is its own test item.
_spec_app = create_app(TestConfig)

#: Rejections of schema-valid requests that depend on stored data (or, for login, on two
#: fields at once), which the schema does not express (schemathesis'
#: positive_data_acceptance, ST202): each is documented (422 or 412) on its operation.
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
    # v1.1: a token's lifetime depends on the clock and its scopes on the pair;
    # a webhook URL on DNS and WEBHOOK_ALLOW_PRIVATE_TARGETS
    "auth_tokens_create": [422], "webhooks_create": [422], "webhooks_update": [422],
    # email (v1.1): a schema-valid token string is still unknown, used, expired or forged
    "auth_password_reset_confirm": [422], "auth_verify_email": [422], "email_unsubscribe": [422],
}
#: A malformed If-Match never matches: 412 like a stale one (api-contract.md), which
#: negative_data_rejection (ST201) must count as a rejection.
IF_MATCH_OPERATIONS = ["tasks_replace", "tasks_update", "tasks_update_status", "tasks_assign", "tasks_delete"]
#: Lists whose query string is only ``PageArgsSchema`` (and ``unread``) ignore unknown
#: parameters by design, so schemathesis' "unexpected query parameter" negative cases
#: (ST201) are answered 200 there.
LENIENT_QUERY = ["teams_list", "teams_members_list", "teams_invitations_list", "invitations_list_mine",
                 "comments_list", "attachments_list", "tasks_activity", "teams_presence",
                 "notifications_list", "users_list", "webhooks_deliveries_list",
                 "labels_list", "team_labels_list", "task_watchers_list"]
# schemathesis' defaults for positive_data_acceptance and negative_data_rejection
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]
_REJECTED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]


def _operation_checks(operation_id: str) -> dict:
    """schemathesis' configuration of one operation's checks (see the tables above)."""
    checks = {}
    if operation_id in DATA_DEPENDENT_REJECTIONS:
        extra = [str(s) for s in DATA_DEPENDENT_REJECTIONS[operation_id]]
        checks["positive_data_acceptance"] = {"expected-statuses": _ACCEPTED + extra}
    if operation_id in IF_MATCH_OPERATIONS:
        checks["negative_data_rejection"] = {"expected-statuses": _REJECTED + ["412"]}
    if operation_id in LENIENT_QUERY:
        checks["negative_data_rejection"] = {"enabled": False}
    return {"include-operation-id": operation_id, "checks": checks}


TUNED_OPERATIONS = {*DATA_DEPENDENT_REJECTIONS, *IF_MATCH_OPERATIONS, *LENIENT_QUERY}
_SPEC = _spec_app.test_client().get("/api/openapi.json").json
#: ``(operationId, "METHOD /path")`` of every documented operation, the test's parameters.
OPERATIONS = sorted((op["operationId"], f"{method.upper()} {path}") for path, item in _SPEC["paths"].items()
                    for method, op in item.items())


@pytest.fixture
def api_schema(operation_id, app):
    """The document as schemathesis sees it, reduced to one operation (every other one is
    turned off in its config), for the test database's ``app``, with the phases of
    :data:`PHASES`. Loaded lazily (``schemathesis.pytest.from_fixture``): the cases of
    the coverage phase are built when the item runs, on the xdist worker that runs it,
    instead of for all operations on every worker at collection time."""
    # only this operation's own entry: schemathesis matches every entry against the
    # operation for each check of each case (a third of its validation time with all)
    entries = [_operation_checks(operation_id)] if operation_id in TUNED_OPERATIONS else []
    entries.append({"exclude-operation-id": operation_id, "enabled": False})
    phases = {phase: {"enabled": phase in PHASES} for phase in ("examples", "coverage", "fuzzing")}
    if not ALL_CHECKS:  # methods the path lacks: tests/test_errors.py sends each once per path
        phases["coverage"]["unexpected-methods"] = []
    return schemathesis.openapi.from_dict(_SPEC, config=SchemathesisConfig.from_dict(
        {"operations": entries, "phases": phases}))


lazy_schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_lazy_schemathesis(request):
    """schemathesis' lazy runner reads and renames ``node._nodeid``, which pytest 9's
    nodes no longer have (their id is ``node.nodeid``): give it the attribute to use."""
    request.node._nodeid = request.node.nodeid


# Bounded so the run takes about a minute; raise it locally with
# SCHEMATHESIS_MAX_EXAMPLES=100 SCHEMATHESIS_CHECKS=all make test PYTEST_ARGS=tests/test_openapi.py
# (that is `--checks all`, and the coverage phase's requests with the methods a path lacks;
# 401s, 405s and missing headers have their own tests too: test_errors.py sends every
# lacking method to every path once, where schemathesis repeats them for each operation).
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "10"))
#: schemathesis' phases (its ``--phases``). All three by default; ``make test-fast`` leaves
#: out ``coverage`` (every boundary and mutation case the schema defines: ~90 % of the
#: cases, up to 300 for one operation), keeping the examples and the fuzzing.
PHASES = set(os.environ.get("SCHEMATHESIS_PHASES", "examples,coverage,fuzzing").split(","))
ALL_CHECKS = os.environ.get("SCHEMATHESIS_CHECKS") == "all"
EXCLUDED_CHECKS = [] if ALL_CHECKS else [ignored_auth, unsupported_method, missing_required_header]


# One database: the document and the validation do not depend on it; PostgreSQL is
# the stricter one (NUL characters, integer ranges, encodings) and the production one.
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("operation_id", [op for op, _ in OPERATIONS], ids=[name for _, name in OPERATIONS])
@lazy_schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_spec(case, app, fuzz_user, operation_id):
    """schemathesis' checks, positive and negative cases; the ones that send more
    requests per case (a third of the time) only with ``SCHEMATHESIS_CHECKS=all``."""
    case.call_and_validate(app=app, headers=fuzz_user.headers(operation_id), excluded_checks=EXCLUDED_CHECKS)
