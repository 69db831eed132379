"""Entity type and entity schemas."""

from __future__ import annotations

import marshmallow as ma
from webargs.fields import DelimitedList

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp

STATUS = ma.validate.Length(min=1, max=64)


class EntityTypeSchema(Schema):
    id = ma.fields.String(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default=None, allow_none=True)
    schema_ = ma.fields.Dict(
        data_key="schema",
        load_default=None,
        metadata={"description": "JSON Schema (2020-12) for entity data"},
    )
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)


class EntityTypeUpdateSchema(Schema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(allow_none=True)
    schema_ = ma.fields.Dict(data_key="schema")


class EntitySchema(Schema):
    id = ma.fields.String(dump_only=True)
    entity_type_id = ma.fields.String(required=True)
    data = ma.fields.Dict(required=True)
    status = ma.fields.String(load_default="draft", validate=STATUS)
    version = ma.fields.Integer(dump_only=True)
    published_at = Timestamp(dump_only=True)
    published_version = ma.fields.Integer(dump_only=True, allow_none=True)
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)


class EntityUpdateSchema(Schema):
    data = ma.fields.Dict(metadata={"description": "Replaces the data as a whole."})
    status = ma.fields.String(validate=STATUS)


class EntityBulkSchema(Schema):
    entities = ma.fields.List(
        ma.fields.Nested(EntitySchema), required=True, validate=ma.validate.Length(max=10_000)
    )


class EntityQueryArgsSchema(PageArgs):
    entity_type_id = ma.fields.String(data_key="entityTypeId")
    status = ma.fields.String()
    updated_since = ma.fields.Integer(data_key="updatedSince")
    ids = DelimitedList(ma.fields.String(), metadata={"description": "comma-separated ids"})


class EntityRunSchema(Schema):
    run_id = ma.fields.String()
    workflow_id = ma.fields.String()
    run_status = ma.fields.String()
    status = ma.fields.String(metadata={"description": "how the run ended for this entity"})
    error = ma.fields.String(allow_none=True)
    created_at = Timestamp()
    completed_at = Timestamp()
