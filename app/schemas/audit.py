"""Audit log schemas."""

from __future__ import annotations

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp


class AuditActorSchema(Schema):
    key_id = ma.fields.String(allow_none=True)
    key_prefix = ma.fields.String(allow_none=True)
    role = ma.fields.String(allow_none=True)


class AuditEntrySchema(Schema):
    id = ma.fields.String()
    at = Timestamp()
    actor = ma.fields.Nested(AuditActorSchema)
    action = ma.fields.String(metadata={"example": "workflow.updated"})
    resource_type = ma.fields.String(metadata={"example": "workflow"})
    resource_id = ma.fields.String(allow_none=True)
    details = ma.fields.Dict(
        metadata={
            "description": "names, counts and ids (never values, never secrets)",
            "example": {"fields": ["steps"]},
        }
    )


class AuditQueryArgsSchema(PageArgs):
    action = ma.fields.String(validate=ma.validate.Length(min=1, max=80))
    resource_type = ma.fields.String(
        data_key="resourceType", validate=ma.validate.Length(min=1, max=40)
    )
    resource_id = ma.fields.String(
        data_key="resourceId", validate=ma.validate.Length(min=1, max=255)
    )
    actor_key_id = ma.fields.String(
        data_key="actorKeyId", validate=ma.validate.Length(min=1, max=40)
    )
    since = ma.fields.Integer(
        validate=ma.validate.Range(min=0),
        metadata={"description": "only entries at or after this time (ms)"},
    )
