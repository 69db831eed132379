"""Approval (review gate) schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp
from app.statuses import APPROVAL_STATUSES as STATUSES

MAX_DECIDE_IDS = 10_000  # ids one decide call takes


class ApprovalSchema(Schema):
    id = ma.fields.String()
    run_id = ma.fields.String()
    workflow_id = ma.fields.String()
    step_id = ma.fields.String(metadata={"example": "review"})
    entity_id = ma.fields.String()
    status = ma.fields.String(metadata={"enum": list(STATUSES)})
    preview = ma.fields.Raw(
        allow_none=True,
        metadata={
            "description": "the entity as the run has it at the gate, with earlier steps' outputs",
            "example": {"data": {"title": "Desk lamp", "description": "A warm, dimmable..."}},
        },
    )
    instructions = ma.fields.String(allow_none=True)
    assignees = ma.fields.List(ma.fields.String())
    expires_at = Timestamp()
    created_at = Timestamp()
    decided_at = Timestamp()
    decided_by = ma.fields.String(allow_none=True, metadata={"description": "the API key id"})
    comment = ma.fields.String(allow_none=True)


class ApprovalQueryArgsSchema(PageArgs):
    run_id = ma.fields.String(data_key="runId", validate=ma.validate.Length(min=1, max=40))
    workflow_id = ma.fields.String(
        data_key="workflowId", validate=ma.validate.Length(min=1, max=40)
    )
    step_id = ma.fields.String(data_key="stepId", validate=ma.validate.Length(min=1, max=80))
    status = ma.fields.String(validate=ma.validate.OneOf(STATUSES))


class DecisionSchema(Schema):
    comment = ma.fields.String(
        load_default=None,
        allow_none=True,
        validate=ma.validate.Length(max=10_000),
        metadata={"example": "Tone is right; ship it."},
    )


class DecideFilterSchema(Schema):
    run_id = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=40))
    step_id = ma.fields.String(validate=ma.validate.Length(min=1, max=80))


class DecideSchema(Schema):
    ids = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=40)),
        validate=ma.validate.Length(min=1, max=MAX_DECIDE_IDS),
    )
    filter = ma.fields.Nested(DecideFilterSchema)
    decision = ma.fields.String(required=True, validate=ma.validate.OneOf(("approve", "reject")))
    comment = ma.fields.String(
        load_default=None, allow_none=True, validate=ma.validate.Length(max=10_000)
    )

    @ma.validates_schema
    def _one_selection(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("ids" in data) == ("filter" in data):
            raise ma.ValidationError("Give exactly one of ids or filter.", "_schema")


class DecidedSchema(Schema):
    decided = ma.fields.Integer(metadata={"description": "approvals this call decided"})
