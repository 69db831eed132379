"""``/api/v1/workflows/{id}/revisions``: every saved version, diffs between two, restore."""

from __future__ import annotations

from typing import Any

import jsonpatch
from flask.views import MethodView
from sqlmodel import col

from app.api import Blueprint
from app.api.workflows import caller_actor
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import WorkflowRevision
from app.pagination import keyset_page, page_headers
from app.schemas.workflows import (
    JsonPatchOperationSchema,
    RevisionContentSchema,
    RevisionDiffArgsSchema,
    RevisionQueryArgsSchema,
    RevisionSchema,
    RevisionSummarySchema,
    WorkflowSchema,
)
from app.services import revisions as service
from app.services.workflows import get_workflow, restore_workflow

URL_PREFIX = "/workflows"
blp = Blueprint(
    "revisions", __name__, description="Workflow revisions: every saved version, kept whole."
)


def revision_view(revision: WorkflowRevision) -> dict[str, Any]:
    """A revision as the API shows it: its content, who saved it and when."""
    return {
        **revision.snapshot,
        "version": revision.version,
        "created_at": revision.created_at,
        "actor": {"key_id": revision.actor_key_id, "key_prefix": revision.actor_key_prefix},
        "changes": revision.changes,
        "restored_from": revision.restored_from,
    }


def _check_workflow(workflow_id: str) -> None:
    """404 unless the workflow is the caller's workspace's."""
    get_workflow(
        session=db_session(), workspace_id=current_caller().workspace_id, workflow_id=workflow_id
    )


@blp.route("/<workflow_id>/revisions")
class Revisions(MethodView):
    @require_role("viewer")
    @blp.arguments(RevisionQueryArgsSchema, location="query")
    @blp.response(200, RevisionSummarySchema(many=True))
    def get(self, args: dict[str, Any], workflow_id: str) -> Any:
        """List a workflow's revisions, newest first"""
        _check_workflow(workflow_id)
        query = keyset_page(
            service.revisions_query(workflow_id),
            col(WorkflowRevision.version),
            args,
            descending=True,
            key_type=int,
        )
        rows = [revision_view(r) for r in db_session().scalars(query)]
        return page_headers(rows, args, "version")


@blp.route("/<workflow_id>/revisions/<int:version>")
class RevisionsByVersion(MethodView):
    @require_role("viewer")
    @blp.response(200, RevisionSchema)
    def get(self, workflow_id: str, version: int) -> Any:
        """Get the workflow as it was at one version"""
        _check_workflow(workflow_id)
        return revision_view(
            service.get_revision(session=db_session(), workflow_id=workflow_id, version=version)
        )


@blp.route("/<workflow_id>/revisions/<int:version>/diff")
class RevisionDiff(MethodView):
    @require_role("viewer")
    @blp.arguments(RevisionDiffArgsSchema, location="query")
    @blp.response(200, JsonPatchOperationSchema(many=True))
    def get(self, args: dict[str, Any], workflow_id: str, version: int) -> Any:
        """An RFC 6902 JSON Patch from version `against` (default: the one before) to this one

        Version 1 without `against` diffs from an empty document.
        """
        _check_workflow(workflow_id)
        session = db_session()
        target = service.get_revision(session=session, workflow_id=workflow_id, version=version)
        against = args.get("against", version - 1)
        source: dict[str, Any] = {}
        if against >= 1:
            before = service.get_revision(session=session, workflow_id=workflow_id, version=against)
            source = RevisionContentSchema().dump(before.snapshot)
        patch = jsonpatch.make_patch(source, RevisionContentSchema().dump(target.snapshot))
        return list(patch)


@blp.route("/<workflow_id>/revisions/<int:version>/restore")
class RevisionRestore(MethodView):
    @require_role("editor")
    @blp.response(200, WorkflowSchema)
    def post(self, workflow_id: str, version: int) -> Any:
        """Restore a version: the workflow moves to a new version with that version's content"""
        row = restore_workflow(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            workflow_id=workflow_id,
            version=version,
            actor=caller_actor(),
        )
        return row, {"ETag": f'"{row.version}"'}
