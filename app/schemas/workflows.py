"""Workflow, step and settings schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp

WORKFLOW_STATUSES = ("draft", "active", "archived")
STEP_ID = ma.validate.Regexp(
    r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
    error="Step ids are letters, digits and underscores, starting with a letter or underscore.",
)


class StepSchema(Schema):
    id = ma.fields.String(load_default=None, validate=STEP_ID)
    type = ma.fields.String(required=True)
    name = ma.fields.String(load_default=None, allow_none=True)
    config = ma.fields.Dict(load_default=dict)


class RetrySchema(Schema):
    max_attempts = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=10))
    backoff_seconds = ma.fields.Float(load_default=1.0, validate=ma.validate.Range(min=0, max=600))


class NotifyOnFinishSchema(Schema):
    channel = ma.fields.String(
        required=True, validate=ma.validate.OneOf(["webhook", "slack", "email"])
    )
    url = ma.fields.Url(load_default=None, require_tld=False, schemes={"http", "https"})
    to = ma.fields.List(ma.fields.Email(), load_default=None)
    credential = ma.fields.String(load_default=None)
    link_base_url = ma.fields.Url(load_default=None, require_tld=False)


class SettingsSchema(Schema):
    concurrency = ma.fields.Integer(
        load_default=1000,
        validate=ma.validate.Range(min=1, max=100_000),
        metadata={"description": "max entities in flight for one run"},
    )
    tolerated_failure_percentage = ma.fields.Float(
        load_default=0, validate=ma.validate.Range(min=0, max=100)
    )
    retry = ma.fields.Nested(RetrySchema, load_default=lambda: RetrySchema().load({}))
    entity_timeout_seconds = ma.fields.Float(
        load_default=300, validate=ma.validate.Range(min=0.1, max=86_400)
    )
    notify_on_finish = ma.fields.Nested(NotifyOnFinishSchema, load_default=None, allow_none=True)


class WorkflowSchema(Schema):
    id = ma.fields.String(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default=None, allow_none=True)
    status = ma.fields.String(load_default="draft", validate=ma.validate.OneOf(WORKFLOW_STATUSES))
    entity_type_id = ma.fields.String(required=True)
    steps = ma.fields.List(
        ma.fields.Nested(StepSchema), required=True, validate=ma.validate.Length(max=100)
    )
    settings = ma.fields.Nested(SettingsSchema, load_default=lambda: SettingsSchema().load({}))
    steps_count = ma.fields.Method("_steps_count", dump_only=True)
    version = ma.fields.Integer(dump_only=True)
    last_run_at = Timestamp(dump_only=True)
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)

    def _steps_count(self, obj: Any) -> int:
        steps = obj["steps"] if isinstance(obj, dict) else obj.steps
        return len(steps or [])


class WorkflowSummarySchema(WorkflowSchema):
    class Meta:
        exclude = ("steps", "settings")


class WorkflowUpdateSchema(Schema):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(allow_none=True)
    status = ma.fields.String(validate=ma.validate.OneOf(WORKFLOW_STATUSES))
    steps = ma.fields.List(ma.fields.Nested(StepSchema), validate=ma.validate.Length(max=100))
    settings = ma.fields.Nested(SettingsSchema)


class WorkflowQueryArgsSchema(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(WORKFLOW_STATUSES))


class StepTypeSchema(Schema):
    type = ma.fields.String()
    description = ma.fields.String()
    config_schema = ma.fields.Dict()
    output_schema = ma.fields.Dict()
