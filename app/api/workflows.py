"""``/api/v1/workflows``: workflows of typed steps."""

from __future__ import annotations

import json
from typing import Any

import yaml
from flask import Response, request
from flask.views import MethodView
from sqlmodel import col, select

from app import jsonbody
from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.errors import ConveyorError
from app.models import Workflow
from app.pagination import keyset_page, page_headers
from app.schemas.workflows import (
    ValidationResultSchema,
    WorkflowDocumentSchema,
    WorkflowDuplicateSchema,
    WorkflowQueryArgsSchema,
    WorkflowSchema,
    WorkflowSummarySchema,
    WorkflowUpdateSchema,
)
from app.services import workflow_documents as documents
from app.services import workflows as service
from app.services.entities import parse_if_match
from app.services.revisions import Actor

URL_PREFIX = "/workflows"
blp = Blueprint("workflows", __name__, description="Workflows: ordered, typed steps.")

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
# A request body that is JSON or YAML, chosen by Content-Type.
DOCUMENT_BODY = {
    "required": True,
    "content": {
        media: {"schema": {"$ref": "#/components/schemas/WorkflowDocument"}}
        for media in ("application/json", "application/yaml")
    },
}


def caller_actor() -> Actor:
    """The calling key, as revisions record it."""
    caller = current_caller()
    return Actor(key_id=caller.key_id, key_prefix=caller.key_prefix)


class _JSONYAMLLoader(yaml.SafeLoader):
    """YAML that means JSON: no anchors or aliases (a small document cannot expand into a
    huge one), and dates and times stay strings, as they would be in JSON."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases are not accepted", event.start_mark
            )
        return super().compose_node(parent, index)


def _timestamp_as_string(loader: _JSONYAMLLoader, node: yaml.Node) -> Any:
    """``2026-03-29`` stays the string it is in JSON, not a ``date``."""
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_JSONYAMLLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_string)


def json_or_yaml_body() -> Any:
    """The request body, parsed as YAML when its Content-Type says so, else as JSON (400 when
    malformed)."""
    if not request.get_data().strip():
        raise ConveyorError("A JSON or YAML body is required.")
    if request.mimetype in YAML_TYPES:
        try:
            body = yaml.load(request.get_data(as_text=True), Loader=_JSONYAMLLoader)  # noqa: S506
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConveyorError(f"The body is not valid YAML: {exc}") from exc
        try:
            # What is stored is JSON: refuse what has no JSON form (.nan, !!binary, !!set...),
            # and what JSON bodies may not hold either (app.jsonbody: depth, NUL...).
            return jsonbody.loads(json.dumps(body, allow_nan=False))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ConveyorError(f"The YAML body has no JSON equivalent: {exc}") from exc
    # Not silent: the app's JSON provider answers malformed JSON with its own 400.
    return request.get_json(force=True)


def wants_yaml() -> bool:
    """True when the client asks for YAML (``Accept`` or ``?format=yaml``)."""
    if request.args.get("format") in ("yaml", "yml"):
        return True
    best = request.accept_mimetypes.best_match(["application/json", *YAML_TYPES])
    return best in YAML_TYPES


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
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            data=data,
            actor=caller_actor(),
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
            actor=caller_actor(),
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


@blp.route("/<workflow_id>/duplicate")
class WorkflowDuplicate(MethodView):
    @require_role("editor")
    @blp.arguments(WorkflowDuplicateSchema, required=False)
    @blp.response(201, WorkflowSchema)
    def post(self, data: dict[str, Any], workflow_id: str) -> Any:
        """Copy a workflow into a new draft, "<name> (copy)" unless named (no triggers, no runs)"""
        row = service.duplicate_workflow(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            workflow_id=workflow_id,
            name=data.get("name"),
            actor=caller_actor(),
        )
        return row, {"ETag": f'"{row.version}"'}


@blp.route("/<workflow_id>/export")
class WorkflowExport(MethodView):
    @require_role("viewer")
    @blp.response(
        200,
        WorkflowDocumentSchema,
        content_type="application/json",
        description="JSON, or YAML with Accept: application/yaml (or ?format=yaml)",
    )
    def get(self, workflow_id: str) -> Any:
        """Export a workflow as a portable document (JSON or YAML; no ids, no secrets)"""
        session = db_session()
        row = service.get_workflow(
            session=session, workspace_id=current_caller().workspace_id, workflow_id=workflow_id
        )
        document = documents.export_document(session=session, workflow=row)
        if wants_yaml():
            text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
            return Response(text, mimetype="application/yaml")
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        return Response(text, mimetype="application/json")


@blp.route("/import")
class WorkflowImport(MethodView):
    @require_role("editor")
    @blp.doc(requestBody=DOCUMENT_BODY)
    @blp.response(201, WorkflowSchema)
    def post(self) -> Any:
        """Create a draft workflow from an exported document (JSON or YAML by Content-Type)"""
        row = documents.import_document(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            body=json_or_yaml_body(),
            actor=caller_actor(),
        )
        return row, {"ETag": f'"{row.version}"'}


@blp.route("/validate")
class WorkflowValidate(MethodView):
    @require_role("viewer")
    @blp.doc(
        requestBody={
            "required": True,
            "description": "a POST /workflows body or an exported document, JSON or YAML",
            "content": DOCUMENT_BODY["content"],
        }
    )
    @blp.response(200, ValidationResultSchema)
    def post(self) -> Any:
        """Check a workflow body or document as a save would, without saving it"""
        errors = documents.validation_errors(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            body=json_or_yaml_body(),
        )
        return {"valid": True} if not errors else {"valid": False, "errors": errors}
