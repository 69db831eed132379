"""``/api/v1/workflows``: workflows of typed steps."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from sqlmodel import col, select

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Workflow
from app.pagination import keyset_page, page_headers
from app.schemas.workflows import (
    WorkflowQueryArgsSchema,
    WorkflowSchema,
    WorkflowSummarySchema,
    WorkflowUpdateSchema,
)
from app.services import workflows as service
from app.services.entities import parse_if_match

URL_PREFIX = "/workflows"
blp = Blueprint("workflows", __name__, description="Workflows: ordered, typed steps.")


@blp.route("")
class Workflows(MethodView):
    @require_role("viewer")
    @blp.arguments(WorkflowQueryArgsSchema, location="query")
    @blp.response(200, WorkflowSummarySchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List workflows, optionally by status"""
        query = select(Workflow).where(Workflow.workspace_id == current_caller().workspace_id)
        if "status" in args:
            query = query.where(Workflow.status == args["status"])
        rows = list(db_session().exec(keyset_page(query, col(Workflow.id), args)))
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(WorkflowSchema)
    @blp.response(201, WorkflowSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create a workflow (each step's config is checked against its type)"""
        row = service.create_workflow(
            session=db_session(), workspace_id=current_caller().workspace_id, data=data
        )
        return row, {"ETag": f'"{row.version}"'}


@blp.route("/<workflow_id>")
class WorkflowsById(MethodView):
    @require_role("viewer")
    @blp.response(200, WorkflowSchema)
    def get(self, workflow_id: str) -> Any:
        """Get a workflow with its steps and settings"""
        row = service.get_workflow(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            workflow_id=workflow_id,
        )
        return row, {"ETag": f'"{row.version}"'}

    @require_role("editor")
    @blp.arguments(WorkflowUpdateSchema)
    @blp.response(200, WorkflowSchema)
    def patch(self, data: dict[str, Any], workflow_id: str) -> Any:
        """Update a workflow; every change bumps its version (If-Match refuses a stale write)"""
        row = service.update_workflow(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            workflow_id=workflow_id,
            data=data,
            expected_version=parse_if_match(request.headers.get("If-Match")),
        )
        return row, {"ETag": f'"{row.version}"'}

    @require_role("editor")
    @blp.response(204)
    def delete(self, workflow_id: str) -> None:
        """Delete a workflow that has no runs (409 otherwise: archive it instead)"""
        service.delete_workflow(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            workflow_id=workflow_id,
        )
