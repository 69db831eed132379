"""Key-value store schemas."""

from __future__ import annotations

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp


class KvEntrySchema(Schema):
    namespace = ma.fields.String(metadata={"example": "catalog"})
    key = ma.fields.String(metadata={"example": "published-count"})
    value = ma.fields.Raw(allow_none=True, metadata={"description": "any JSON", "example": 42})
    version = ma.fields.Integer(
        metadata={"description": "bumped by every write; send it in If-Match to compare-and-set"}
    )
    updated_at = Timestamp()


class KvKeySchema(Schema):
    namespace = ma.fields.String(metadata={"example": "catalog"})
    key = ma.fields.String(metadata={"example": "published-count"})
    version = ma.fields.Integer()
    updated_at = Timestamp()


class KvQueryArgsSchema(PageArgs):
    prefix = ma.fields.String(
        validate=ma.validate.Length(min=1, max=200),
        metadata={"description": "only keys starting with this"},
    )
