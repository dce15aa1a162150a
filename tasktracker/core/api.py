"""flask-restful glue: an `Api` that lets errors reach the app's handlers, and
the small request helpers every resource uses."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_restful import Api as _RestfulApi
from marshmallow import Schema, fields

from tasktracker.core.errors import BadRequest, ApiError


class Api(_RestfulApi):
    """flask-restful's Api, minus its own error handling.

    flask-restful turns exceptions it does not know (JWT errors, marshmallow
    ``ValidationError``) into 500s; re-raising hands them to the handlers in
    :mod:`tasktracker.core.errors`, which answer in the contract's shape.
    """

    def handle_error(self, e):  # noqa: D401 - flask-restful hook
        raise e

    def error_router(self, original_handler, e):
        return original_handler(e)


def json_body() -> dict:
    """The request's JSON object.

    Raises :class:`ApiError` 415 if the content type is not JSON and
    :class:`BadRequest` (400) if the body is not valid JSON or not an object.
    """
    if not request.is_json:
        raise ApiError("Content-Type must be application/json.", status=415,
                       code="unsupported_media_type")
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("Request body is not valid JSON.", code="malformed_json")
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.", code="malformed_json")
    return data


def load_body(schema: Schema, *, partial: bool = False) -> dict:
    """Parse the JSON body with a marshmallow schema (422 on invalid fields)."""
    return schema.load(json_body(), partial=partial)


def load_args(schema: Schema) -> dict[str, Any]:
    """Parse the query string with a marshmallow schema (422 on invalid values).

    Repeated parameters (``?status=a&status=b``) reach List fields as lists.
    """
    data: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        data[key] = values if isinstance(schema.fields.get(key), fields.List) else values[-1]
    return schema.load(data)


def no_content() -> Response:
    """An empty ``204 No Content`` response."""
    return Response(status=204)
