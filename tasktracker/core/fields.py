"""marshmallow fields shared by the schemas."""

from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import fields


def iso_utc(value: datetime | None) -> str | None:
    """An aware time as the API writes it: UTC, ISO 8601, ``Z`` suffix
    (``2026-12-01T08:00:00Z``); None stays None (api-contract.md, "Times")."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


class UTCDateTime(fields.AwareDateTime):
    """ISO 8601 time (api-contract.md, "Times").

    Load: an offset is required (a naive time is a 422), the value is converted
    to UTC. Dump: UTC with a ``Z`` suffix, e.g. ``2026-12-01T08:00:00Z``.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("format", "iso")
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs) -> datetime:
        try:
            return super()._deserialize(value, attr, data, **kwargs).astimezone(timezone.utc)
        except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC equivalent
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from exc

    def _serialize(self, value, attr, obj, **kwargs):
        return iso_utc(value)


#: JSON-Schema patterns of the text rules (OpenAPI): no NUL character anywhere
#: (:func:`tasktracker.core.api.storable_text`; its other half, no unpaired UTF-16
#: surrogate, is not a pattern: ECMA regexes without the ``u`` flag see the halves
#: of every astral character as surrogates) ...
STORABLE_TEXT_PATTERN = r"^[^\u0000]*$"
#: ... and, for names, titles and bodies, a character that is not whitespace as
#: ``str.strip`` means it (spelled out: ECMA's ``\s`` is a smaller set).
_WHITESPACE = "".join(f"\\u{c:04x}" for c in range(0x3001) if chr(c).isspace())
NOT_BLANK_TEXT_PATTERN = rf"^[^\u0000]*[^\u0000{_WHITESPACE}][^\u0000]*$"
