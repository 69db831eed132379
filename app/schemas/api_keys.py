"""API key and workspace schemas."""

from __future__ import annotations

import marshmallow as ma

from app.schemas import Schema, Timestamp
from app.statuses import ROLES


class ApiKeySchema(Schema):
    id = ma.fields.String(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    role = ma.fields.String(load_default="viewer", validate=ma.validate.OneOf(ROLES))
    key_prefix = ma.fields.String(dump_only=True)
    created_at = Timestamp(dump_only=True)
    last_used_at = Timestamp(dump_only=True)


class ApiKeyCreatedSchema(ApiKeySchema):
    key = ma.fields.String(
        dump_only=True, metadata={"description": "The full key. Shown only in this response."}
    )


class WorkspaceSchema(Schema):
    id = ma.fields.String()
    name = ma.fields.String()
    created_at = Timestamp()


class CallerKeySchema(Schema):
    id = ma.fields.String()
    name = ma.fields.String()
    role = ma.fields.String()
    key_prefix = ma.fields.String()


class MeSchema(Schema):
    workspace = ma.fields.Nested(WorkspaceSchema)
    key = ma.fields.Nested(CallerKeySchema)
