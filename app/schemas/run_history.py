"""Run history clean-up: which finished runs to remove, and how many went."""

from __future__ import annotations

import marshmallow as ma

from app.schemas import Schema


class RunHistoryDeleteArgsSchema(Schema):
    before = ma.fields.Integer(
        required=True,
        validate=ma.validate.Range(min=0),
        metadata={"description": "remove finished runs started before this time (epoch ms)"},
    )


class DeletedSchema(Schema):
    deleted = ma.fields.Integer(metadata={"description": "how many runs were removed"})
