"""flask-restful glue: an `Api` that lets errors reach the app's handlers, and
the small request helpers every resource uses."""

from __future__ import annotations

from typing import Any, Callable

from flask import Response, current_app, request
from flask_restful import Api as _RestfulApi
from marshmallow import Schema, fields

import sqlalchemy as sa

from tasktracker.core.errors import BadRequest, ApiError, Unprocessable
from tasktracker.core.pagination import PageArgsSchema, paginate
from tasktracker.core.serialization import dumps


class Api(_RestfulApi):
    """flask-restful's Api, minus its own error handling.

    flask-restful turns exceptions it does not know (JWT errors, marshmallow
    ``ValidationError``) into 500s; re-raising hands them to the handlers in
    :mod:`tasktracker.core.errors`, which answer in the contract's shape.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.representations = {"application/json": output_json}

    def handle_error(self, e):  # noqa: D401 - flask-restful hook
        raise e

    def error_router(self, original_handler, e):
        return original_handler(e)


def output_json(data: Any, code: int, headers: dict | None = None) -> Response:
    """flask-restful's ``application/json`` representation, through :func:`dumps`
    (flask-restful calls the stdlib's ``json.dumps`` itself, bypassing Flask's JSON
    provider, so ``app.json`` would change nothing for Resources)."""
    response = current_app.response_class(dumps(data), status=code, mimetype="application/json")
    if headers:
        response.headers.extend(headers)
    return response


def json_body() -> dict:
    """The request's JSON object.

    Raises :class:`ApiError` 415 if the content type is not JSON, 413 if the body
    is larger than ``MAX_JSON_BYTES``, :class:`BadRequest` (400) if the body is
    not valid JSON (including absurdly deep nesting) or not an object, and
    :class:`Unprocessable` (422) if a string in it contains a NUL character
    (PostgreSQL cannot store one; ``details`` names the top-level field).
    """
    if not request.is_json:
        raise ApiError("Content-Type must be application/json.", status=415,
                       code="unsupported_media_type")
    limit = current_app.config.get("MAX_JSON_BYTES")
    if limit:
        size = request.content_length
        if size is None:  # chunked: read it (Werkzeug stops at MAX_CONTENT_LENGTH)
            size = len(request.get_data())
        if size > limit:
            raise ApiError(f"JSON body larger than {limit} bytes.", status=413, code="payload_too_large")
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # "[[[[..." deeper than the parser's recursion limit
        data = None
    if data is None:
        raise BadRequest("Request body is not valid JSON.", code="malformed_json")
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object.", code="malformed_json")
    _reject_unstorable_text(data.items())
    return data


_UNSTORABLE_MESSAGE = "NUL characters and unpaired surrogates are not allowed."


def storable_text(text: str) -> bool:
    """True if ``text`` can be stored as text and sent to the database or a cache
    key: no NUL and valid UTF-8 (no unpaired UTF-16 surrogate such as JSON
    ``"\\ud800"``, which the drivers refuse to encode)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unstorable_text(value: Any) -> bool:
    """True if a string anywhere in ``value`` (keys included) cannot be stored as
    text (see :func:`storable_text`). Iterative: any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not storable_text(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_unstorable_text(items) -> None:
    """422 naming every top-level field whose value (or name) contains a NUL character."""
    bad = {}
    for key, value in items:
        if _unstorable_text(key) or _unstorable_text(value):
            bad[key.replace("\x00", "\\0") if isinstance(key, str) else "_schema"] = [_UNSTORABLE_MESSAGE]
    if bad:
        raise Unprocessable(details=bad)


def load_body(schema: Schema, *, partial: bool | None = None) -> dict:
    """Parse the JSON body with a marshmallow schema (422 on invalid fields);
    ``partial`` None keeps the schema's own (``TaskPatchSchema`` is partial)."""
    return schema.load(json_body(), partial=partial)


_LOADED_ARGS: dict[tuple[type, bytes], dict[str, Any]] = {}
_LOADED_ARGS_MAX = 4096


def load_args(schema: Schema) -> dict[str, Any]:
    """Parse the query string with a marshmallow schema (422 on invalid values,
    including a NUL character in any value).

    Repeated parameters (``?status=a&status=b``) reach List fields as lists.
    Successful loads are memoised per (schema class, raw query string): query
    schemas are built without options and are pure functions of the string (no
    clock, no caller), and the same list URL comes back on every poll. Each call
    gets its own copy.
    """
    memo_key = (type(schema), request.query_string)
    loaded = _LOADED_ARGS.get(memo_key)
    if loaded is None:
        loaded = _load_args(schema)
        if len(_LOADED_ARGS) >= _LOADED_ARGS_MAX:
            _LOADED_ARGS.clear()
        _LOADED_ARGS[memo_key] = loaded
    return {k: list(v) if isinstance(v, list) else v for k, v in loaded.items()}


def _load_args(schema: Schema) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        data[key] = values if isinstance(schema.fields.get(key), fields.List) else values[-1]
    _reject_unstorable_text(data.items())
    return schema.load(data)


_page_args_schema = PageArgsSchema()


def page_response(dump: Callable[[list], list], query: Callable[..., sa.Select], *args) -> tuple[dict, int]:
    """``(page, 200)``: one page of ``query(*args)`` for the request's ``?page=&per_page=``
    (api-contract.md, "Lists are paginated"), its rows turned into items by ``dump``
    (a schema's ``dump`` with ``many=True``). The page arguments are checked first
    (422), then ``query`` runs (its 404s and 403s)."""
    page_args = load_args(_page_args_schema)
    return paginate(query(*args), page_args["page"], page_args["per_page"], dump), 200


def no_content() -> Response:
    """An empty ``204 No Content`` response."""
    return Response(status=204)
