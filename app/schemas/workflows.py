"""Workflow, step and settings schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.pagination import PageArgs
from app.schemas import Schema, Timestamp
from steps.base import Category

WORKFLOW_STATUSES = ("draft", "active", "archived")
STEP_CATEGORIES = tuple(category.value for category in Category)
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
    keep_partial_changes = ma.fields.Boolean(
        load_default=False,
        metadata={
            "description": "false (default): an entity that ends failed keeps the data and "
            "status it had before the run (the outputs of its steps stay on the run item); "
            "true: it keeps what the steps before the failure wrote"
        },
    )


# Fields a workflow's JSON from ``GET`` carries that a client cannot set: POST and PATCH accept
# them (so a fetched workflow can be sent back as it is) and ignore them.
READ_ONLY_FIELDS = (
    "id",
    "workspaceId",
    "version",
    "stepsCount",
    "lastRunAt",
    "createdAt",
    "updatedAt",
)


class IgnoresReadOnlyFields(Schema):
    """A request schema that drops the read-only fields of a workflow's JSON before loading."""

    @ma.pre_load
    def _drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
        return data


class WorkflowSchema(IgnoresReadOnlyFields):
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


class WorkflowUpdateSchema(IgnoresReadOnlyFields):
    name = ma.fields.String(validate=ma.validate.Length(min=1, max=200))
    entity_type_id = ma.fields.String(
        metadata={"description": "accepted when unchanged; a workflow never changes type"}
    )
    description = ma.fields.String(allow_none=True)
    status = ma.fields.String(validate=ma.validate.OneOf(WORKFLOW_STATUSES))
    steps = ma.fields.List(ma.fields.Nested(StepSchema), validate=ma.validate.Length(max=100))
    settings = ma.fields.Nested(SettingsSchema)


class WorkflowQueryArgsSchema(PageArgs):
    status = ma.fields.String(validate=ma.validate.OneOf(WORKFLOW_STATUSES))


class StepTypeSchema(Schema):
    type = ma.fields.String()
    category = ma.fields.String(
        allow_none=True, metadata={"description": "one of " + ", ".join(STEP_CATEGORIES)}
    )
    description = ma.fields.String()
    config_schema = ma.fields.Dict()
    output_schema = ma.fields.Dict()


class StepTypeQueryArgsSchema(Schema):
    category = ma.fields.String(validate=ma.validate.OneOf(STEP_CATEGORIES))


class WorkflowDuplicateSchema(Schema):
    name = ma.fields.String(
        validate=ma.validate.Length(min=1, max=200),
        metadata={"description": 'default: "<name> (copy)"'},
    )


# --- revisions -------------------------------------------------------------------------


class ActorSchema(Schema):
    key_id = ma.fields.String(allow_none=True)
    key_prefix = ma.fields.String(allow_none=True)


class RevisionSummarySchema(Schema):
    version = ma.fields.Integer()
    created_at = Timestamp()
    actor = ma.fields.Nested(ActorSchema)
    changes = ma.fields.List(
        ma.fields.String(), metadata={"description": "the top-level fields that changed"}
    )
    restored_from = ma.fields.Integer(
        allow_none=True, metadata={"description": "the version this one restored, if any"}
    )


class RevisionContentSchema(Schema):
    """A workflow's content at one version: what a diff compares."""

    name = ma.fields.String()
    description = ma.fields.String(allow_none=True)
    status = ma.fields.String()
    entity_type_id = ma.fields.String()
    steps = ma.fields.List(ma.fields.Nested(StepSchema))
    settings = ma.fields.Nested(SettingsSchema)


class RevisionSchema(RevisionContentSchema, RevisionSummarySchema):
    """The workflow as it was at one version, with who saved it and when."""


class RevisionQueryArgsSchema(PageArgs):
    pass


class RevisionDiffArgsSchema(Schema):
    against = ma.fields.Integer(
        validate=ma.validate.Range(min=1),
        metadata={"description": "the version to diff from (default: the one before)"},
    )


class JsonPatchOperationSchema(Schema):
    """One RFC 6902 operation."""

    op = ma.fields.String()
    path = ma.fields.String()
    from_ = ma.fields.String(data_key="from", attribute="from")
    value = ma.fields.Raw()


# --- export / import / validate --------------------------------------------------------

DOCUMENT_API_VERSION = "conveyor/v1"


class EntityTypeRefSchema(Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    schema_ = ma.fields.Dict(
        data_key="schema", load_default=lambda: {"type": "object"}, allow_none=False
    )


class WorkflowDocumentSchema(Schema):
    """A portable workflow: no ids, no secrets (step configs name credentials)."""

    api_version = ma.fields.String(required=True, validate=ma.validate.Equal(DOCUMENT_API_VERSION))
    kind = ma.fields.String(required=True, validate=ma.validate.Equal("Workflow"))
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=200))
    description = ma.fields.String(load_default=None, allow_none=True)
    entity_type = ma.fields.Nested(EntityTypeRefSchema, required=True)
    steps = ma.fields.List(
        ma.fields.Nested(StepSchema), required=True, validate=ma.validate.Length(max=100)
    )
    settings = ma.fields.Nested(SettingsSchema, load_default=lambda: SettingsSchema().load({}))


class ValidationResultSchema(Schema):
    valid = ma.fields.Boolean()
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "the same paths a failed save names"},
    )
