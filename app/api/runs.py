"""``/api/v1/workflows/{id}/run`` and ``.../runs``: start, watch, cancel and retry runs."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Run, RunItem
from app.pagination import keyset_page, page_headers
from app.queue import get_queue
from app.schemas.run_history import DeletedSchema, RunHistoryDeleteArgsSchema
from app.schemas.runs import (
    RunCreatedSchema,
    RunCreateSchema,
    RunItemQueryArgsSchema,
    RunItemSchema,
    RunQueryArgsSchema,
    RunSchema,
)
from app.services import approvals, audit
from app.services import runs as service
from app.services.idempotency import idempotent
from app.services.workflows import get_workflow

URL_PREFIX = "/workflows"
blp = Blueprint("runs", __name__, description="Runs of a workflow over a batch of entities.")


def awaiting_of(run: Run) -> int:
    """Items of ``run`` waiting at a review gate (only a running run has any)."""
    if run.status != "running":
        return 0
    return approvals.awaiting_counts(db_session(), [run.id]).get(run.id, 0)


def progress_of(run: Run, awaiting: int | None = None) -> dict[str, int]:
    """``{total, completed, failed, cancelled, pending, awaitingApproval}``.

    ``pending`` counts queued and running items; those waiting at a review gate are in
    ``awaitingApproval``, so the six always add up: total = the other five.
    """
    if awaiting is None:
        awaiting = awaiting_of(run)
    done = run.completed + run.failed + run.cancelled
    return {
        "total": run.total,
        "completed": run.completed,
        "failed": run.failed,
        "cancelled": run.cancelled,
        "pending": max(0, run.total - done - awaiting),
        "awaiting_approval": awaiting,
    }


def run_view(run: Run, awaiting: int | None = None) -> dict[str, Any]:
    """A run as the API shows it (``awaiting``: its count of waiting items, if known)."""
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "workflow_version": run.workflow_version,
        "job_id": run.job_id,
        "status": run.status,
        "progress": progress_of(run, awaiting),
        "trigger": {"type": run.trigger_type, "trigger_id": run.trigger_id},
        "retry_of": run.retry_of,
        "dry_run": run.dry_run,
        "input": run.input,
        "usage": {"input_tokens": run.input_tokens, "output_tokens": run.output_tokens},
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
    }


def polling_headers(run: Run) -> dict[str, str]:
    """ETag of the run's visible state, and a Retry-After hint while it is going."""
    state = f"{run.status}.{run.completed}.{run.failed}.{run.cancelled}.{run.total}"
    etag = f'"{state}.{awaiting_of(run)}"'
    headers = {"ETag": etag}
    if run.status in ("pending", "running"):
        headers["Retry-After"] = "2"
    return headers


def not_modified(headers: dict[str, str]) -> Response | None:
    """A 304 when the client's ``If-None-Match`` is the current ETag."""
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return Response(status=304, headers=headers)
    return None


@blp.route("/<workflow_id>/run")
class WorkflowRun(MethodView):
    @require_role("executor")
    @blp.arguments(RunCreateSchema)
    @blp.response(202, RunCreatedSchema)
    def post(self, data: dict[str, Any], workflow_id: str) -> Any:
        """Run the workflow over entityIds or a filter; returns at once, fans out in background"""
        caller = current_caller()
        session = db_session()
        workflow = get_workflow(
            session=session, workspace_id=caller.workspace_id, workflow_id=workflow_id
        )
        queue = get_queue()

        def start() -> tuple[Any, int]:
            run = service.start_run(
                session=session,
                queue=queue,
                workflow=workflow,
                entity_ids=data.get("entity_ids"),
                selector=data.get("filter"),
                input=data.get("input"),
                dry_run=data.get("dry_run", False),
                sample=data.get("sample"),
                commit=False,
            )
            audit.annotate(session, total=run.total, dryRun=run.dry_run)
            return {"jobId": run.job_id, "runId": run.id}, 202

        body, status, _ = idempotent(
            session=session,
            key=request.headers.get("Idempotency-Key"),
            workspace_id=caller.workspace_id,
            scope=f"run:{workflow_id}",
            body=request.get_json(silent=True),
            action=start,
        )
        return {"job_id": body["jobId"], "run_id": body["runId"]}


@blp.route("/<workflow_id>/runs")
class WorkflowRuns(MethodView):
    @require_role("viewer")
    @blp.arguments(RunQueryArgsSchema, location="query")
    @blp.response(200, RunSchema(many=True))
    def get(self, args: dict[str, Any], workflow_id: str) -> Any:
        """List the workflow's runs, newest first"""
        caller = current_caller()
        session = db_session()
        get_workflow(session=session, workspace_id=caller.workspace_id, workflow_id=workflow_id)
        query = select(Run).where(col(Run.workflow_id) == workflow_id)
        if "status" in args:
            query = query.where(col(Run.status) == args["status"])
        runs = list(session.scalars(keyset_page(query, col(Run.id), args, descending=True)))
        awaiting = approvals.awaiting_counts(session, [r.id for r in runs if r.status == "running"])
        rows = [run_view(r, awaiting.get(r.id, 0)) for r in runs]
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(RunHistoryDeleteArgsSchema, location="query")
    @blp.response(200, DeletedSchema)
    def delete(self, args: dict[str, Any], workflow_id: str) -> Any:
        """Remove the workflow's finished runs started before `before` (ms), with their items"""
        session = db_session()
        get_workflow(
            session=session, workspace_id=current_caller().workspace_id, workflow_id=workflow_id
        )
        deleted = service.delete_runs_before(
            session=session, workflow_id=workflow_id, before_ms=args["before"]
        )
        return {"deleted": deleted}


def _run(workflow_id: str, run_id: str) -> Run:
    return service.get_run(
        session=db_session(),
        workspace_id=current_caller().workspace_id,
        run_id=run_id,
        workflow_id=workflow_id,
    )


@blp.route("/<workflow_id>/runs/<run_id>")
class WorkflowRunsById(MethodView):
    @require_role("viewer")
    @blp.response(200, RunSchema)
    @blp.alt_response(304, description="Not modified since the ETag in If-None-Match")
    def get(self, workflow_id: str, run_id: str) -> Any:
        """Get a run with its progress (ETag / If-None-Match for cheap polling)"""
        run = _run(workflow_id, run_id)
        headers = polling_headers(run)
        return not_modified(headers) or (run_view(run), headers)

    @require_role("editor")
    @blp.response(204)
    def delete(self, workflow_id: str, run_id: str) -> None:
        """Remove a finished run with its items and logs (409 while it is pending or running)"""
        service.delete_run(session=db_session(), run=_run(workflow_id, run_id))


@blp.route("/<workflow_id>/runs/<run_id>/items")
class WorkflowRunItems(MethodView):
    @require_role("viewer")
    @blp.arguments(RunItemQueryArgsSchema, location="query")
    @blp.response(200, RunItemSchema(many=True))
    def get(self, args: dict[str, Any], workflow_id: str, run_id: str) -> Any:
        """Per-entity results of a run, with each step's output, error and duration"""
        run = _run(workflow_id, run_id)
        query = select(RunItem).where(col(RunItem.run_id) == run.id)
        if "status" in args:
            query = query.where(col(RunItem.status) == args["status"])
        rows = [
            {
                "seq": item.seq,
                "entity_id": item.entity_id,
                "status": item.status,
                "attempts": item.attempts,
                "error": item.error,
                "steps": [
                    {
                        "step_id": r.get("stepId"),
                        "type": r.get("type"),
                        "status": r.get("status"),
                        "output": r.get("output"),
                        "error": r.get("error"),
                        "duration_ms": r.get("durationMs"),
                        "attempts": r.get("attempts"),
                    }
                    for r in item.step_results or []
                ],
                "changes": item.changes,
                "started_at": item.started_at,
                "completed_at": item.completed_at,
            }
            for item in db_session().scalars(
                keyset_page(query, col(RunItem.seq), args, key_type=int)
            )
        ]
        return page_headers(rows, args, "seq")


@blp.route("/<workflow_id>/runs/<run_id>/cancel")
class WorkflowRunCancel(MethodView):
    @require_role("executor")
    @blp.response(200, RunSchema)
    def post(self, workflow_id: str, run_id: str) -> Any:
        """Cancel a run: pending entities never start, running ones stop at the next step"""
        run = service.cancel_run(
            session=db_session(), run=_run(workflow_id, run_id), queue=get_queue()
        )
        return run_view(run)


@blp.route("/<workflow_id>/runs/<run_id>/retry")
class WorkflowRunRetry(MethodView):
    @require_role("executor")
    @blp.response(202, RunCreatedSchema)
    def post(self, workflow_id: str, run_id: str) -> Any:
        """Start a new run over the entities that failed or were cancelled in this one"""
        run = service.retry_run(
            session=db_session(), queue=get_queue(), run=_run(workflow_id, run_id)
        )
        return {"job_id": run.job_id, "run_id": run.id}
