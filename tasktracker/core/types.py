"""Column types shared by the models: UTC timestamps, ``StrEnum`` columns and the
``Annotated`` aliases of the columns every model repeats (``Mapped[CreatedAt]``)."""

from __future__ import annotations

from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from sqlalchemy.orm import mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timestamp stored as UTC and always returned timezone-aware (UTC).

    SQLite drops offsets, so values are converted to UTC on the way in and get
    ``tzinfo=UTC`` on the way out; PostgreSQL uses ``timestamptz``. Naive values
    are refused with ``ValueError``: the API rejects naive input before this point.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: timestamps must be timezone-aware")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def enum_values(enum_cls: type[StrEnum]) -> tuple[str, ...]:
    """The values of a ``StrEnum`` as plain strings, in declaration order.

    For code that needs the literal set (marshmallow ``OneOf``, OpenAPI ``enum``
    metadata: PyYAML cannot represent enum members), and the ``values_callable``
    of :func:`str_enum`.
    """
    return tuple(member.value for member in enum_cls)


def str_enum(enum_cls: type[StrEnum], length: int) -> sa.Enum:
    """The column type of a ``StrEnum``: ``VARCHAR(length)`` holding the members'
    values, with no CHECK constraint and no native (PostgreSQL) enum type.

    The schema is the plain string column it always was; loaded values are the
    enum's members (equal to their strings, so ``task.status == "done"`` holds and
    they serialise as plain strings). Plain strings are accepted on write
    (``validate_strings`` off); loading a value the enum lacks raises
    ``LookupError``.
    """
    return sa.Enum(enum_cls, length=length, native_enum=False, create_constraint=False,
                   validate_strings=False, values_callable=enum_values)


#: The integer primary key ``id``.
IntPK = Annotated[int, mapped_column(primary_key=True)]
#: A timestamp column (``Mapped[Timestamp | None]`` for a nullable one).
Timestamp = Annotated[datetime, mapped_column(UTCDateTime)]
#: When the row was inserted.
CreatedAt = Annotated[datetime, mapped_column(UTCDateTime, default=utcnow)]
#: When the row was inserted, then every ORM update of it.
UpdatedAt = Annotated[datetime, mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)]
