"""``GET /api/openapi.json`` (OpenAPI 3.0, built by apispec from the resources'
docstrings and the marshmallow schemas) and ``GET /api/docs`` (Swagger UI,
served from the ``swagger-ui-bundle`` package, no CDN)."""

from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec_webframeworks.flask import FlaskPlugin
from flask import Blueprint, Flask, current_app, jsonify, send_from_directory
from marshmallow import Schema, class_registry, fields
from swagger_ui_bundle import swagger_ui_path

from tasktracker.core.pagination import page_envelope_schema

bp = Blueprint("openapi", __name__, url_prefix="/api")

ERROR_RESPONSES = {
    "BadRequest": (400, "Malformed JSON or wrong body type"),
    "Unauthorized": (401, "Missing, malformed, expired, tampered or revoked token"),
    "Forbidden": (403, "Known resource you may not change"),
    "NotFound": (404, "Missing or not visible to you"),
    "Conflict": (409, "Conflict (duplicate, invalid transition, already a member)"),
    "PreconditionFailed": (412, "If-Match does not match the current version"),
    "PayloadTooLarge": (413, "Body or upload too large"),
    "UnsupportedMediaType": (415, "Unsupported media type"),
    "ValidationError": (422, "Field validation failed; details maps field -> messages"),
    "RateLimited": (429, "Rate limited; see Retry-After"),
    "ServiceUnavailable": (503, "A dependency (database, broker) is down"),
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


def build_spec(app: Flask) -> dict:
    """The OpenAPI 3 document of every ``/api``, ``/health`` and ``/ready`` route."""
    spec = APISpec(
        title="TaskTracker API",
        version="1.0.0",
        openapi_version="3.0.3",
        info={"description": "Task tracking for teams. Errors: "
                             '{"error": {"code", "message", "details"}}.'},
        plugins=[FlaskPlugin(), MarshmallowPlugin(schema_name_resolver=_schema_name_resolver)],
        servers=[{"url": "/"}],
        security=[{"bearerAuth": []}],
    )
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "bearerFormat": "JWT"})
    spec.components.schema("Error", schema=ErrorSchema)
    for name, (status, description) in ERROR_RESPONSES.items():
        spec.components.response(name, {"description": description,
                                        "content": {"application/json": {"schema": "Error"}}})
    from tasktracker.auth.schemas import PublicUserSchema, UserSchema

    spec.components.schema("UserPage", schema=page_envelope_schema(UserSchema, "UserPage"))
    # Referenced by "$ref" (oneOf) in GET /api/users/<id>, so never auto-registered.
    spec.components.schema("PublicUser", schema=PublicUserSchema)

    with app.test_request_context():
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if rule.endpoint in ("static", "openapi.spec", "openapi.docs", "openapi.docs_asset"):
                continue
            if not (rule.rule.startswith("/api/") or rule.rule in ("/health", "/ready")):
                continue
            view = app.view_functions[rule.endpoint]
            if not (view.__doc__ or getattr(view, "view_class", None)):
                continue
            spec.path(view=view, app=app)
    return spec.to_dict()


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
