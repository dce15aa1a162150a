"""``GET /api/openapi.json`` (OpenAPI 3.0, built by apispec from the resources'
docstrings and the marshmallow schemas) and ``GET /api/docs`` (Swagger UI,
served from the ``swagger-ui-bundle`` package, no CDN).

A resource method's docstring carries only what is particular to its operation,
as YAML after ``---``::

    operationId: tasks_create          # required, stable: the generated clients' names
    tags: [invitations]                # default: the blueprint's name
    description: ...
    query: TaskListArgsSchema          # the query string (-> 422)
    body: TaskCreateSchema             # a JSON body (-> 400, 413, 415, 422)
    headers: [Idempotency-Key]         # request headers of REQUEST_HEADERS (If-Match -> 412)
    errors: [403, 409]                 # other error statuses it can answer
    responses:
      201: {description: ..., schema: TaskSchema, headers: [Location, ETag]}

(standard OpenAPI keys such as ``requestBody`` or ``parameters`` pass through).
:func:`build_spec` adds, as flask-smorest does, what follows from the code: the
path parameters (from the URL rule), 404 where there are any, the security and
401 of the guard in the resource's ``method_decorators`` (403 for
``admin_required``; ``security: []`` for an unguarded one), 429 when a rate
limit decorates the resource, 503 everywhere (the database, hence the token
check, can be down). Error responses and response headers are ``$ref`` s to
components.

For generated clients (openapi-python-client): response schemas list every
field as ``required`` (marshmallow dumps each declared field), a nullable
nested object is ``{allOf: [$ref], nullable: true}``, the task status and
priority are named enum components, and request strings carry the storable-text
pattern (no NUL, no unpaired surrogate: :func:`tasktracker.core.api.storable_text`).
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy

import re
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.utils import trim_docstring
from apispec.yaml_utils import load_yaml_from_docstring
from flask import Blueprint, Flask, current_app, jsonify, send_from_directory
from flask_limiter import RouteLimit
from marshmallow import Schema, class_registry, fields
from swagger_ui_bundle import swagger_ui_path
from werkzeug.routing import IntegerConverter

from tasktracker.auth.access import admin_required, auth_required
from tasktracker.auth.resources import refresh_required
from tasktracker.auth.schemas import PublicUserSchema
from tasktracker.core.fields import STORABLE_TEXT_PATTERN
from tasktracker.tasks.models import PRIORITIES, STATUSES
from tasktracker.tasks.resources import IDEMPOTENCY_KEY, IF_MATCH
from tasktracker.tasks.schemas import UserIdOrMe

bp = Blueprint("openapi", __name__, url_prefix="/api")

ERROR_RESPONSES = {
    400: ("BadRequest", "Malformed JSON or wrong body type"),
    401: ("Unauthorized", "Missing, malformed, expired, tampered or revoked token"),
    403: ("Forbidden", "Known resource you may not change"),
    404: ("NotFound", "Missing or not visible to you"),
    409: ("Conflict", "Conflict (duplicate, invalid transition, already a member)"),
    412: ("PreconditionFailed", "If-Match does not match the current version"),
    413: ("PayloadTooLarge", "Body or upload too large"),
    415: ("UnsupportedMediaType", "Unsupported media type"),
    422: ("ValidationError", "Field validation failed (or a rule that depends on stored data, "
                             "such as team membership); details maps field -> messages"),
    429: ("RateLimited", "Rate limited; see Retry-After"),
    503: ("ServiceUnavailable", "A dependency (database, broker) is down"),
}
_ERROR_HEADERS = {401: ["WWW-Authenticate"], 429: ["Retry-After"], 503: ["Retry-After"]}

#: Response headers (``components/headers``), named in a response's ``headers: [...]``.
RESPONSE_HEADERS = {
    "ETag": 'Entity tag: of a task, its version "<version>"; of a list, its result for the caller',
    "Location": "URL of the created resource",
    "Idempotent-Replayed": '"true" when this is a replayed result (Idempotency-Key)',
    "Cache-Control": '"private, no-cache"',
    "Retry-After": "Seconds to wait before retrying",
    "WWW-Authenticate": '"Bearer" challenge (RFC 6750)',
}

#: Request headers, named in a docstring's ``headers: [...]`` (inlined as parameters).
REQUEST_HEADERS = {
    "If-Match": {
        "description": 'Optional "<version>" (or a comma list of them, or *); '
                       "a stale value answers 412, so does a malformed one",
        "schema": {"type": "string", "pattern": f"^{IF_MATCH.pattern}$"},
    },
    "If-None-Match": {
        "description": "An ETag of an earlier response of this URL (or a list of them, or *); "
                       "if the result would be the same, the answer is 304 without a body",
        "schema": {"type": "string", "pattern": STORABLE_TEXT_PATTERN},
    },
    "Idempotency-Key": {
        "description": "1..255 visible ASCII characters, unique per request you mean",
        "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY.pattern}$"},
    },
}


class ErrorBodySchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict(required=True)


class ErrorSchema(Schema):
    """The contract's single error shape."""

    error = fields.Nested(ErrorBodySchema, required=True)


def _schema_name_resolver(schema) -> str:
    if isinstance(schema, str):
        schema = class_registry.get_class(schema)
    cls = schema if isinstance(schema, type) else schema.__class__
    name = cls.__name__
    if name.endswith("Schema"):
        name = name[: -len("Schema")]
    return name


#: Enums that are components of their own: one ``TaskStatus`` for the task, its
#: inputs and its filters (else generators name one enum per property, and
#: ``Task.status`` collided with the ``/status`` body).
NAMED_ENUMS = {"TaskStatus": list(STATUSES), "TaskPriority": list(PRIORITIES)}
#: The token each guard of a resource's ``method_decorators`` demands.
GUARDS = {auth_required: "user", admin_required: "admin", refresh_required: "refresh"}


def _guard(view_class, method: str) -> str | None:
    """``"user"``, ``"admin"`` or ``"refresh"``: the token the resource's
    ``method_decorators`` demand for ``method``; None when unguarded."""
    decorators = view_class.method_decorators
    if isinstance(decorators, Mapping):
        decorators = decorators.get(method, [])
    found = [GUARDS[d] for d in decorators if d in GUARDS]
    return found[0] if found else None


_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # <int:task_id> -> {task_id}


def _path_parameters(rule) -> list[dict]:
    """The rule's ``<converter:name>`` parts, in path order, as required path parameters
    (an ``int`` one is an integer; 404 past the converter's bounds)."""
    return [{"in": "path", "name": name, "required": True,
             "schema": {"type": "integer" if isinstance(conv, IntegerConverter) else "string"}}
            for name, conv in rule._converters.items()]


def _response(spec: dict) -> dict:
    """A docstring response, with ``schema`` as JSON content and header names as refs."""
    out = {k: v for k, v in spec.items() if k != "schema"}
    if "schema" in spec:
        out["content"] = {"application/json": {"schema": spec["schema"]}}
    if isinstance(spec.get("headers"), list):
        out["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in spec["headers"]}
    return out


def _operation(rule, view_class, blueprint: str, method: str) -> dict:
    """The OpenAPI operation of ``view_class.<method>``: its docstring plus what
    follows from the rule and the resource's decorators."""
    doc = load_yaml_from_docstring(getattr(view_class, method).__doc__ or "")
    assert "operationId" in doc, f"{view_class.__name__}.{method}: no operationId"
    op = {k: v for k, v in doc.items() if k not in ("query", "body", "headers", "errors", "responses")}
    op.setdefault("tags", [blueprint])
    op["summary"] = trim_docstring(getattr(view_class, method).__doc__).split("\n", 1)[0]
    errors = set(doc.get("errors", [])) | {503}
    params = _path_parameters(rule)
    if params:
        errors.add(404)
    if "query" in doc:
        params.append({"in": "query", "schema": doc["query"]})
        errors.add(422)
    for name in doc.get("headers", []):
        params.append({"in": "header", "name": name, "required": False, **deepcopy(REQUEST_HEADERS[name])})
        if name == "If-Match":
            errors.add(412)
    if params or "parameters" in op:
        op["parameters"] = params + op.get("parameters", [])
    if "body" in doc:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": doc["body"]}}}
        errors |= {400, 413, 415, 422}
    guard = _guard(view_class, method)
    if guard is None:
        op["security"] = []
    else:
        errors.add(401)
        if guard == "admin":
            errors.add(403)
    if any(isinstance(d, RouteLimit) for d in getattr(view_class, "decorators", [])):
        errors.add(429)
    responses = {int(code): _response(r) for code, r in doc["responses"].items()}
    for status in sorted(errors - set(responses)):
        responses[status] = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
    op["responses"] = dict(sorted(responses.items()))
    return op


def build_spec(app: Flask) -> dict:
    """The OpenAPI 3 document of every ``/api`` resource (``/health`` and ``/ready``
    appear without operations)."""
    ma_plugin = MarshmallowPlugin(schema_name_resolver=_schema_name_resolver)
    spec = APISpec(
        title="TaskTracker API",
        version="1.0.0",
        openapi_version="3.0.3",
        info={"description": "Task tracking for teams. Errors: "
                             '{"error": {"code", "message", "details"}}.'},
        plugins=[ma_plugin],
        servers=[{"url": "/"}],
        security=[{"bearerAuth": []}],
    )
    ma_plugin.map_to_openapi_type(UserIdOrMe, None, None)  # typed by its anyOf metadata
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "bearerFormat": "JWT"})
    for name, description in RESPONSE_HEADERS.items():
        spec.components.header(name, {"description": description, "schema": {"type": "string"}})
    spec.components.schema("Error", schema=ErrorSchema)
    for status, (name, description) in ERROR_RESPONSES.items():
        response = {"description": description, "content": {"application/json": {"schema": "Error"}}}
        if status in _ERROR_HEADERS:
            response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in _ERROR_HEADERS[status]}
        spec.components.response(name, response)
    for name, values in NAMED_ENUMS.items():
        spec.components.schema(name, {"type": "string", "enum": values})
    # Referenced by "$ref" (oneOf) in GET /api/users/<id>, so never auto-registered.
    spec.components.schema("PublicUser", schema=PublicUserSchema)

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.rule in ("/health", "/ready"):
            spec.path(path=rule.rule, operations={})
            continue
        view_class = getattr(app.view_functions[rule.endpoint], "view_class", None)
        if not rule.rule.startswith("/api/") or view_class is None:
            continue
        blueprint = rule.endpoint.split(".", 1)[0]
        operations = {m.lower(): _operation(rule, view_class, blueprint, m.lower())
                      for m in sorted(rule.methods - {"HEAD", "OPTIONS"})}
        spec.path(path=_RULE_ARGUMENT.sub(r"{\1}", rule.rule), operations=operations)
    return _for_generators(spec.to_dict())


def _walk(node, visit) -> None:
    """Call ``visit`` on every dict in ``node``, depth first (children first)."""
    if isinstance(node, dict):
        for value in node.values():
            _walk(value, visit)
        visit(node)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _refs(node) -> set[str]:
    """Names of the components ``node`` references."""
    found: set[str] = set()

    def visit(item: dict) -> None:
        if isinstance(item.get("$ref"), str):
            found.add(item["$ref"].rsplit("/", 1)[1])

    _walk(node, visit)
    return found


def _closure(names: set[str], schemas: dict) -> set[str]:
    """``names`` and every schema component they reference, transitively."""
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen or name not in schemas:
            continue
        seen.add(name)
        todo.extend(_refs(schemas[name]))
    return seen


def _for_generators(doc: dict) -> dict:
    """The shapes client generators need (see the module docstring)."""
    schemas = doc["components"]["schemas"]
    enums = {tuple(v): name for name, v in NAMED_ENUMS.items()}

    def name_enums(node: dict) -> None:
        name = enums.get(tuple(node.get("enum", ())))
        if name and node is not schemas[name]:
            node.clear()
            node["$ref"] = f"#/components/schemas/{name}"

    def nullable_ref_first(node: dict) -> None:
        # apispec: {anyOf: [{type: object, nullable: true}, {$ref}]} -> {allOf: [{$ref}], nullable: true}
        # (in either order)
        any_of = node.get("anyOf")
        null = {"type": "object", "nullable": True}
        if isinstance(any_of, list) and len(any_of) == 2 and null in any_of:
            ref = any_of[1 - any_of.index(null)]
            if "$ref" in ref:
                del node["anyOf"]
                node["allOf"] = [ref]
                node["nullable"] = True

    _walk(schemas, name_enums)
    _walk(doc["paths"], name_enums)
    _walk(schemas, nullable_ref_first)

    requests, responses = set(), set()
    for item in doc["paths"].values():
        for op in item.values():
            requests |= _refs(op.get("requestBody", {})) | _refs(op.get("parameters", []))
            responses |= _refs({k: v for k, v in op["responses"].items() if "content" in v})
    requests, responses = _closure(requests, schemas), _closure(responses, schemas)
    assert not requests & responses - set(enums.values()), requests & responses
    for name in responses:
        if "properties" in schemas[name]:
            schemas[name]["required"] = list(schemas[name]["properties"])

    def storable_strings(node: dict) -> None:
        if node.get("type") == "string" and not {"pattern", "enum", "format"} & set(node):
            node["pattern"] = STORABLE_TEXT_PATTERN

    for name in requests:
        _walk(schemas[name], storable_strings)
    for item in doc["paths"].values():
        for op in item.values():
            for param in op.get("parameters", []):
                _walk(param.get("schema", {}), storable_strings)
    return doc


@bp.get("/openapi.json")
def spec():
    """The OpenAPI document (cached per process)."""
    cached = current_app.extensions.get("openapi_doc")
    if cached is None:
        cached = current_app.extensions["openapi_doc"] = build_spec(current_app)
    return jsonify(cached)


DOCS_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>TaskTracker API</title>
<link rel="stylesheet" href="docs/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


@bp.get("/docs")
def docs():
    """Swagger UI rendering ``/api/openapi.json`` for a person."""
    return DOCS_HTML, 200, {"Content-Type": "text/html; charset=utf-8"}


@bp.get("/docs/<path:filename>")
def docs_asset(filename: str):
    return send_from_directory(str(swagger_ui_path), filename)
