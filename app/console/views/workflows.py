"""Workflows: the list, a workflow page, and the run form (runs and dry runs)."""

from __future__ import annotations

import json
from typing import Any

from flask import redirect, render_template, request, url_for

from app.console import auth, queries
from app.console.blueprint import bp, caller
from app.db import db_session
from app.errors import ConveyorError
from app.models import Run, Workflow
from app.queue import get_queue
from app.services import entities as entities_service
from app.services import runs as runs_service
from app.services import workflows as workflows_service


@bp.route("/workflows")
@auth.require("viewer")
def workflows() -> Any:
    """Every workflow with its newest run at a glance."""
    rows = queries.workflows_with_last_run(db_session(), caller().workspace_id)
    return render_template("console/workflows.html", rows=rows)


@bp.route("/workflows/<workflow_id>")
@auth.require("viewer")
def workflow(workflow_id: str) -> Any:
    """A workflow's steps, settings, triggers and recent runs."""
    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=caller().workspace_id, workflow_id=workflow_id
    )
    return render_template(
        "console/workflow.html",
        workflow=row,
        entity_type=_entity_type_name(row),
        triggers=queries.workflow_triggers(session, row.id),
        runs=queries.recent_runs(session, row.id),
    )


def _entity_type_name(workflow: Workflow) -> str:
    try:
        return entities_service.get_entity_type(
            session=db_session(),
            workspace_id=workflow.workspace_id,
            type_id=workflow.entity_type_id,
        ).name
    except ConveyorError:
        return workflow.entity_type_id


def _selection(form: Any) -> tuple[list[str] | None, dict[str, Any] | None]:
    """The run form's selection as ``start_run`` takes it: entity ids, or a selector."""
    mode = form.get("selection", "all")
    if mode == "ids":
        ids = [part for part in form.get("ids", "").replace(",", " ").split() if part]
        if not ids:
            raise ConveyorError("List at least one entity id, or choose another selection.")
        return ids, None
    if mode == "status":
        status = form.get("status", "").strip()
        if not status:
            raise ConveyorError("Type the status of the entities to run.")
        return None, {"status": status}
    return None, {}


def _sample(raw: str) -> int | None:
    """The form's optional sample size (a dry run over N entities of the selection)."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise ConveyorError("Sample must be a whole number from 1 to 100000.")
    return int(raw)


@bp.route("/workflows/<workflow_id>/run", methods=["GET", "POST"])
@auth.require("executor", audit=("run.started", Run, None))
def run_workflow(workflow_id: str) -> Any:
    """The run form; Start run starts it through the runs service and shows the run."""
    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=caller().workspace_id, workflow_id=workflow_id
    )
    error = None
    if request.method == "POST":
        try:
            entity_ids, selector = _selection(request.form)
            raw_input = request.form.get("input", "").strip()
            try:
                run_input = json.loads(raw_input) if raw_input else None
            except ValueError as exc:
                raise ConveyorError(f"Input is not valid JSON: {exc}") from exc
            run = runs_service.start_run(
                session=session,
                queue=get_queue(),
                workflow=row,
                entity_ids=entity_ids,
                selector=selector,
                input=run_input,
                dry_run=request.form.get("mode") == "dry",
                sample=_sample(request.form.get("sample", "")),
            )
            return redirect(url_for("console.run", run_id=run.id))
        except ConveyorError as exc:
            session.rollback()
            error = exc.message
            if exc.errors and exc.errors.get("entityIds"):
                error += " " + ", ".join(exc.errors["entityIds"][:20])
    page = render_template(
        "console/run_form.html",
        workflow=row,
        error=error,
        form=request.form,
        entity_type=_entity_type_name(row),
    )
    return page, (422 if error else 200)
