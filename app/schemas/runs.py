"""Run, run item and job schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp

RUN_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
ITEM_STATUSES = ("pending", "running", "awaiting_approval", "completed", "failed", "cancelled")


MAX_RUN_IDS = 100_000


class IdList(ma.fields.List):
    """A list of entity ids (strings of 1 to 64 characters), checked in one pass.

    A run may name 100,000 ids; marshmallow's per-item deserialization would cost a good
    part of a second there. A list that is not all valid ids takes the ordinary path, so
    its errors name the offending positions as usual.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            ma.fields.String(validate=ma.validate.Length(min=1, max=64)),
            validate=ma.validate.Length(max=MAX_RUN_IDS),
            **kwargs,
        )

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and all(isinstance(v, str) and 0 < len(v) <= 64 for v in value):
            return list(value)
        return super()._deserialize(value, attr, data, **kwargs)


class RunFilterSchema(Schema):
    status = ma.fields.String(validate=ma.validate.Length(min=1, max=64))
    updated_since = ma.fields.Integer()
    ids = IdList()


class RunCreateSchema(Schema):
    entity_ids = IdList()
    filter = ma.fields.Nested(RunFilterSchema)
    input = ma.fields.Raw(allow_none=True, metadata={"description": "any JSON: the run input"})
    dry_run = ma.fields.Boolean(
        load_default=False,
        metadata={
            "description": "execute every step but write no entity and deliver nothing; "
            "each item shows its would-be `changes`"
        },
    )
    sample = ma.fields.Integer(
        validate=ma.validate.Range(min=1, max=MAX_RUN_IDS),
        metadata={"description": "take this many entities of the selection, spread over it"},
    )

    @ma.validates_schema
    def _one_selection(self, data: dict[str, Any], **kwargs: Any) -> None:
        if ("entity_ids" in data) == ("filter" in data):
            raise ma.ValidationError("Give exactly one of entityIds or filter.", "_schema")


class RunCreatedSchema(Schema):
    job_id = ma.fields.String()
    run_id = ma.fields.String()


class ProgressSchema(Schema):
    total = ma.fields.Integer()
    completed = ma.fields.Integer()
    failed = ma.fields.Integer()
    cancelled = ma.fields.Integer()
    pending = ma.fields.Integer(
        metadata={"description": "not yet final and not waiting: queued or running"}
    )
    awaiting_approval = ma.fields.Integer(
        metadata={
            "description": "waiting at a review gate; total == completed + failed + "
            "cancelled + pending + awaitingApproval"
        }
    )


class TriggerRefSchema(Schema):
    type = ma.fields.String()
    trigger_id = ma.fields.String(allow_none=True)


class UsageSchema(Schema):
    input_tokens = ma.fields.Integer()
    output_tokens = ma.fields.Integer()


class RunSchema(Schema):
    id = ma.fields.String()
    workflow_id = ma.fields.String()
    workflow_version = ma.fields.Integer()
    job_id = ma.fields.String()
    status = ma.fields.String()
    progress = ma.fields.Nested(ProgressSchema)
    trigger = ma.fields.Nested(TriggerRefSchema)
    retry_of = ma.fields.String(allow_none=True)
    dry_run = ma.fields.Boolean()
    input = ma.fields.Raw(allow_none=True)
    usage = ma.fields.Nested(UsageSchema)
    error = ma.fields.String(allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp()
    completed_at = Timestamp()


class RunQueryArgsSchema(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(RUN_STATUSES))


class StepResultSchema(Schema):
    step_id = ma.fields.String()
    type = ma.fields.String()
    status = ma.fields.String()
    output = ma.fields.Raw(allow_none=True)
    error = ma.fields.String(allow_none=True)
    duration_ms = ma.fields.Integer()
    attempts = ma.fields.Integer()


class RunItemSchema(Schema):
    entity_id = ma.fields.String()
    status = ma.fields.String()
    attempts = ma.fields.Integer()
    error = ma.fields.String(allow_none=True)
    steps = ma.fields.List(ma.fields.Nested(StepResultSchema))
    changes = ma.fields.Raw(
        allow_none=True,
        metadata={
            "description": "dry runs only: `patch` (RFC 6902, stored entity → result) and "
            "the `requests` publish/notify would have sent"
        },
    )
    started_at = Timestamp()
    completed_at = Timestamp()


class RunItemQueryArgsSchema(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(ITEM_STATUSES))


class JobSchema(Schema):
    id = ma.fields.String()
    type = ma.fields.String()
    status = ma.fields.String()
    progress = ma.fields.Nested(ProgressSchema)
    run_id = ma.fields.String(allow_none=True)
    workflow_id = ma.fields.String(allow_none=True)
    dry_run = ma.fields.Boolean()
    error = ma.fields.String(allow_none=True)
    created_at = Timestamp()
    started_at = Timestamp()
    completed_at = Timestamp()


class JobQueryArgsSchema(PageArgs):
    type = ma.fields.String()
    status = ma.fields.String(validate=ma.validate.OneOf(RUN_STATUSES))


class JobLogSchema(Schema):
    id = ma.fields.Integer()
    timestamp = Timestamp()
    level = ma.fields.String()
    entity_id = ma.fields.String(allow_none=True)
    step_id = ma.fields.String(allow_none=True)
    message = ma.fields.String()
    data = ma.fields.Raw(allow_none=True)
