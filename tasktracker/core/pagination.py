"""Pagination of list endpoints (api-contract.md, "Lists are paginated")."""

from __future__ import annotations

import math

import sqlalchemy as sa
from marshmallow import Schema, class_registry, fields, validate

from tasktracker.extensions import db

MAX_PER_PAGE = 100


class PageArgsSchema(Schema):
    """``?page=1&per_page=20``; ``per_page`` is 1..100. Unknown params are ignored here."""

    class Meta:
        unknown = "exclude"

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=20, validate=validate.Range(min=1, max=MAX_PER_PAGE))


def paginate(query: sa.Select, page: int, per_page: int, dump=None, *, fetch=None) -> dict:
    """Run ``query`` for one page and count the total.

    ``dump`` turns the list of rows into JSON-ready items (a schema's ``dump``
    with ``many=True``); or ``fetch`` takes the page's statement (``query`` with
    limit and offset) and returns the items itself. Returns ``{"items", "page",
    "per_page", "total", "pages"}``.
    """
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))
    page_query = query.limit(per_page).offset((page - 1) * per_page)
    items = fetch(page_query) if fetch else dump(db.session.scalars(page_query).all())
    return {
        "items": items,
        "page": page,
        "per_page": per_page,
        "total": total,
        "pages": math.ceil(total / per_page) if total else 0,
    }


def page_envelope_schema(item_schema: type[Schema], name: str, **extra: fields.Field) -> type[Schema]:
    """A schema class named ``name`` for the envelope :func:`paginate` returns
    (``{items, page, per_page, total, pages}``, items dumped by ``item_schema``),
    plus the ``extra`` fields; OpenAPI documents the list responses with it (by
    name: the class is registered like a declared one)."""
    envelope = Schema.from_dict(
        {
            "items": fields.List(fields.Nested(item_schema)),
            "page": fields.Integer(),
            "per_page": fields.Integer(),
            "total": fields.Integer(),
            "pages": fields.Integer(),
            **extra,
        },
        name=name,
    )
    class_registry.register(name, envelope)
    return envelope
