"""marshmallow schemas: the API contract. Python names are snake_case, JSON is camelCase."""

from __future__ import annotations

from typing import Any

import marshmallow as ma


def camelcase(name: str) -> str:
    """``entity_type_id`` → ``entityTypeId``."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


# Integers the database can hold (PostgreSQL BIGINT, SQLite INTEGER): a larger one in a
# query or body would reach SQL and fail there.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_RANGE = ma.validate.Range(
    min=INT64_MIN, max=INT64_MAX, error="Must be a 64-bit integer (at most {max})."
)


class Schema(ma.Schema):
    """Base schema: unknown fields are refused, fields appear in camelCase, and every
    integer field is bounded to 64 bits."""

    class Meta:
        unknown = ma.RAISE

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        """Give every field a camelCase ``data_key`` unless it names one itself; bound
        every integer field (also inside lists and dicts) to what the database holds."""
        if field_obj.data_key is None:
            field_obj.data_key = camelcase(field_name)
        bound_integers(field_obj)


def bound_integers(field_obj: ma.fields.Field) -> None:
    """Add the 64-bit range to an integer field, or to the integers a container holds."""
    if isinstance(field_obj, ma.fields.Integer) and INT64_RANGE not in field_obj.validators:
        field_obj.validators = [*field_obj.validators, INT64_RANGE]
    elif isinstance(field_obj, ma.fields.List):
        bound_integers(field_obj.inner)
    elif isinstance(field_obj, ma.fields.Dict) and field_obj.value_field is not None:
        bound_integers(field_obj.value_field)


class Timestamp(ma.fields.Integer):
    """Milliseconds since the Unix epoch."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        metadata = kwargs.pop("metadata", {})
        metadata.setdefault("description", "milliseconds since the Unix epoch, UTC")
        super().__init__(metadata=metadata, **kwargs)
