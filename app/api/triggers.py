"""``/api/v1/triggers``: cron schedules and webhooks that start workflow runs."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlmodel import col, select

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Trigger, TriggerEvent
from app.pagination import keyset_page, page_headers
from app.schemas.triggers import (
    TriggerEventQueryArgsSchema,
    TriggerEventSchema,
    TriggerQueryArgsSchema,
    TriggerSchema,
    TriggerUpdateSchema,
)
from app.services import triggers as service

URL_PREFIX = "/triggers"
blp = Blueprint(
    "triggers", __name__, description="Triggers: cron schedules and webhooks that start runs."
)


@blp.route("")
class Triggers(MethodView):
    @require_role("viewer")
    @blp.arguments(TriggerQueryArgsSchema, location="query")
    @blp.response(200, TriggerSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List triggers, optionally by workflowId, type or enabled"""
        query = select(Trigger).where(Trigger.workspace_id == current_caller().workspace_id)
        if "workflow_id" in args:
            query = query.where(Trigger.workflow_id == args["workflow_id"])
        if "type" in args:
            query = query.where(Trigger.type == args["type"])
        if "enabled" in args:
            query = query.where(Trigger.enabled == args["enabled"])
        rows = list(db_session().exec(keyset_page(query, col(Trigger.id), args)))
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(TriggerSchema)
    @blp.response(201, TriggerSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create a trigger; an enabled cron trigger is scheduled at once (nextRunAt)"""
        return service.create_trigger(
            session=db_session(), workspace_id=current_caller().workspace_id, data=data
        )


@blp.route("/<trigger_id>")
class TriggersById(MethodView):
    @require_role("viewer")
    @blp.response(200, TriggerSchema)
    def get(self, trigger_id: str) -> Any:
        """Get a trigger with its nextRunAt and lastRunAt"""
        return service.get_trigger(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            trigger_id=trigger_id,
        )

    @require_role("editor")
    @blp.arguments(TriggerUpdateSchema)
    @blp.response(200, TriggerSchema)
    def patch(self, data: dict[str, Any], trigger_id: str) -> Any:
        """Update a trigger; a new cron, timezone or enabled flag reschedules it at once"""
        return service.update_trigger(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            trigger_id=trigger_id,
            data=data,
        )

    @require_role("editor")
    @blp.response(204)
    def delete(self, trigger_id: str) -> None:
        """Delete a trigger and its events (the runs it started are kept)"""
        service.delete_trigger(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            trigger_id=trigger_id,
        )


@blp.route("/<trigger_id>/events")
class TriggerEvents(MethodView):
    @require_role("viewer")
    @blp.arguments(TriggerEventQueryArgsSchema, location="query")
    @blp.response(200, TriggerEventSchema(many=True))
    def get(self, args: dict[str, Any], trigger_id: str) -> Any:
        """The trigger's fires, queued fires and skips (with reasons), newest first"""
        session = db_session()
        service.get_trigger(
            session=session, workspace_id=current_caller().workspace_id, trigger_id=trigger_id
        )
        query = select(TriggerEvent).where(TriggerEvent.trigger_id == trigger_id)
        if "outcome" in args:
            query = query.where(TriggerEvent.outcome == args["outcome"])
        rows = list(session.exec(keyset_page(query, col(TriggerEvent.id), args, descending=True)))
        return page_headers(rows, args, "id")
