"""Workflow generation request schema."""

from __future__ import annotations

import marshmallow as ma

from app.schemas import Schema


class GenerateSchema(Schema):
    prompt = ma.fields.String(
        required=True,
        validate=ma.validate.Length(min=1, max=10_000),
        metadata={"description": "what the workflow should do, in plain words"},
    )
    entity_type_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=64))
    credential = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=200),
        metadata={"description": "an openai credential's name (default: the workspace's)"},
    )
    model = ma.fields.String(
        load_default=None,
        validate=ma.validate.Length(min=1, max=200),
        metadata={"description": "the model (default: the credential's, else gpt-4o-mini)"},
    )
