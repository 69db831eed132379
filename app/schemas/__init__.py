"""marshmallow schemas: the API contract. Python names are snake_case, JSON is camelCase."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.bounds import bound_integers


def camelcase(name: str) -> str:
    """``entity_type_id`` → ``entityTypeId``."""
    head, *rest = name.rstrip("_").split("_")
    return head + "".join(part.title() for part in rest)


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


class Timestamp(ma.fields.Integer):
    """Milliseconds since the Unix epoch."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_none", True)
        metadata = kwargs.pop("metadata", {})
        metadata.setdefault("description", "milliseconds since the Unix epoch, UTC")
        super().__init__(metadata=metadata, **kwargs)
