"""Trigger, trigger event and webhook schemas."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from app.cron import check_cron, check_timezone
from app.pagination import PageArgs
from app.schemas import Schema, Timestamp
from app.statuses import (
    CATCH_UP_POLICIES,
    OVERLAP_POLICIES,
    TRIGGER_TYPES,
    UPDATED_SINCE_LAST_RUN,
    Outcome,
)


class CronField(ma.fields.String):
    """A 5-field cron expression, checked and stored with single spaces."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return check_cron(text)
        except ValueError as exc:
            raise ma.ValidationError(str(exc)) from exc


def _validate_timezone(name: str) -> None:
    try:
        check_timezone(name)
    except ValueError as exc:
        raise ma.ValidationError(str(exc)) from exc


CRON = {
    "description": "5-field cron expression (minute hour day-of-month month day-of-week), "
    "read as local wall-clock time in `timezone`",
    "example": "0 9 * * 1-5",
}
TIMEZONE = {"description": "IANA time zone name", "example": "Europe/Paris"}


class SelectorSchema(Schema):
    """Which entities a fire runs over, evaluated at fire time."""

    entity_type_id = ma.fields.String(
        metadata={"description": "must be the workflow's entity type (the default)"}
    )
    status = ma.fields.String(validate=ma.validate.Length(min=1, max=64))
    updated_since = ma.fields.String(
        validate=ma.validate.OneOf([UPDATED_SINCE_LAST_RUN]),
        metadata={
            "description": "`lastRun`: only entities changed since the trigger last started a run"
        },
    )

    @ma.post_load
    def _drop_nulls(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None}


class TriggerSchema(Schema):
    id = ma.fields.String(dump_only=True)
    workflow_id = ma.fields.String(required=True)
    type = ma.fields.String(required=True, validate=ma.validate.OneOf(TRIGGER_TYPES))
    enabled = ma.fields.Boolean(load_default=True)
    cron = CronField(load_default=None, allow_none=True, metadata=CRON)
    timezone = ma.fields.String(load_default="UTC", validate=_validate_timezone, metadata=TIMEZONE)
    selector = ma.fields.Nested(SelectorSchema, load_default=None, allow_none=True)
    overlap_policy = ma.fields.String(
        load_default="skip",
        validate=ma.validate.OneOf(OVERLAP_POLICIES),
        metadata={"description": "when the trigger's previous run is still going (cron only)"},
    )
    catch_up = ma.fields.String(
        load_default="none",
        validate=ma.validate.OneOf(CATCH_UP_POLICIES),
        metadata={
            "description": "after scheduler downtime: skip missed times, or fire the last one"
        },
    )
    next_run_at = Timestamp(dump_only=True)
    last_run_at = Timestamp(dump_only=True)
    created_at = Timestamp(dump_only=True)
    updated_at = Timestamp(dump_only=True)


class TriggerUpdateSchema(Schema):
    enabled = ma.fields.Boolean()
    cron = CronField(allow_none=True, metadata=CRON)
    timezone = ma.fields.String(validate=_validate_timezone, metadata=TIMEZONE)
    selector = ma.fields.Nested(SelectorSchema, allow_none=True)
    overlap_policy = ma.fields.String(validate=ma.validate.OneOf(OVERLAP_POLICIES))
    catch_up = ma.fields.String(validate=ma.validate.OneOf(CATCH_UP_POLICIES))


class TriggerQueryArgsSchema(PageArgs):
    workflow_id = ma.fields.String(data_key="workflowId")
    type = ma.fields.String(validate=ma.validate.OneOf(TRIGGER_TYPES))
    enabled = ma.fields.Boolean()


class TriggerEventSchema(Schema):
    id = ma.fields.String()
    trigger_id = ma.fields.String()
    outcome = ma.fields.String(metadata={"description": "fired | queued | skipped"})
    reason = ma.fields.String(
        allow_none=True,
        metadata={
            "description": "why no run started: overlap | missed | empty_selection | "
            "workflow_not_active | trigger_disabled"
        },
    )
    message = ma.fields.String(allow_none=True)
    run_id = ma.fields.String(allow_none=True)
    scheduled_at = Timestamp(metadata={"description": "the cron time; null for a webhook delivery"})
    created_at = Timestamp()


class TriggerEventQueryArgsSchema(PageArgs):
    outcome = ma.fields.String(validate=ma.validate.OneOf([o.value for o in Outcome]))


class WebhookFiredSchema(Schema):
    job_id = ma.fields.String(allow_none=True, metadata={"description": "null when no run started"})
    run_id = ma.fields.String(allow_none=True, metadata={"description": "null when no run started"})
    event_id = ma.fields.String()
    outcome = ma.fields.String(metadata={"description": "fired, or skipped on an empty selection"})
    reason = ma.fields.String(allow_none=True)
