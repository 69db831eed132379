"""A workflow's revisions: diff between versions, and Restore."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from app.console import auth, queries
from app.console.blueprint import bp, caller, notice
from app.db import db_session
from app.models import Workflow
from app.services import workflows as workflows_service


@bp.route("/workflows/<workflow_id>/revisions")
@auth.require("viewer")
def revisions(workflow_id: str) -> Any:
    """Every saved version of a workflow, one version's diff, and Restore."""
    from app.services import revisions as revisions_service

    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=caller().workspace_id, workflow_id=workflow_id
    )
    versions = queries.revisions(session, row.id)
    shown = request.args.get("version", type=int) or row.version
    against = request.args.get("against", type=int)
    target = revisions_service.get_revision(session=session, workflow_id=row.id, version=shown)
    base = shown - 1 if against is None else against
    source = None
    if base >= 1:
        source = revisions_service.get_revision(session=session, workflow_id=row.id, version=base)
    return render_template(
        "console/revisions.html",
        workflow=row,
        revisions=versions,
        shown=shown,
        base=base,
        patch=queries.revision_patch(source, target),
    )


@bp.route("/workflows/<workflow_id>/revisions/<int:version>/restore", methods=["POST"])
@auth.require("editor", audit=("workflow.restored", Workflow, "workflow_id"))
def restore_revision(workflow_id: str, version: int) -> Any:
    """Put an earlier version back, as a new version."""
    from app.services.workflows import Actor, restore_workflow

    key = caller()
    row = restore_workflow(
        session=db_session(),
        workspace_id=key.workspace_id,
        workflow_id=workflow_id,
        version=version,
        actor=Actor(key_id=key.key_id, key_prefix=key.key_prefix),
    )
    notice(f"Restored version {version} as version {row.version}.")
    return redirect(url_for("console.revisions", workflow_id=row.id))
