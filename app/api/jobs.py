"""``/api/v1/jobs``: background operations done for a client (a workflow run is one)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col

from app.api import Blueprint
from app.api.runs import not_modified, polling_headers, progress_of
from app.auth import current_caller, require_role
from app.db import db_session
from app.errors import NotFound
from app.models import Job, JobLog, Run
from app.pagination import PageArgs, keyset_page, page_headers
from app.redaction import redact
from app.schemas.runs import JobLogSchema, JobQueryArgsSchema, JobSchema
from app.services import runs as run_service

URL_PREFIX = "/jobs"
blp = Blueprint("jobs", __name__, description="Jobs: progress, logs and cancel.")


def job_view(job: Job, run: Run | None) -> dict[str, Any]:
    """A job; a workflow run's job reports the run's status and progress."""
    return {
        "id": job.id,
        "type": job.type,
        "status": run.status if run else "completed",
        "progress": progress_of(run) if run else None,
        "run_id": job.run_id,
        "workflow_id": job.workflow_id,
        "dry_run": run.dry_run if run else False,
        "error": run.error if run else None,
        "created_at": job.created_at,
        "started_at": run.started_at if run else None,
        "completed_at": run.completed_at if run else None,
    }


def _job(job_id: str) -> tuple[Job, Run | None]:
    session = db_session()
    job = session.get(Job, job_id)
    if job is None or job.workspace_id != current_caller().workspace_id:
        raise NotFound("Job not found.")
    return job, session.get(Run, job.run_id) if job.run_id else None


@blp.route("")
class Jobs(MethodView):
    @require_role("viewer")
    @blp.arguments(JobQueryArgsSchema, location="query")
    @blp.response(200, JobSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List jobs, newest first, filtered by type or status"""
        query = (
            select(Job, Run)
            .outerjoin(Run, col(Run.id) == col(Job.run_id))
            .where(col(Job.workspace_id) == current_caller().workspace_id)
        )
        if "type" in args:
            query = query.where(col(Job.type) == args["type"])
        if "status" in args:
            query = query.where(col(Run.status) == args["status"])
        rows = [
            job_view(job, run)
            for job, run in db_session().execute(
                keyset_page(query, col(Job.id), args, descending=True)
            )
        ]
        return page_headers(rows, args, "id")


@blp.route("/<job_id>")
class JobsById(MethodView):
    @require_role("viewer")
    @blp.response(200, JobSchema)
    @blp.alt_response(304, description="Not modified since the ETag in If-None-Match")
    def get(self, job_id: str) -> Any:
        """Get a job with its progress (ETag / If-None-Match for cheap polling)"""
        job, run = _job(job_id)
        if run is None:
            return job_view(job, run)
        headers = polling_headers(run)
        return not_modified(headers) or (job_view(job, run), headers)


@blp.route("/<job_id>/logs")
class JobLogs(MethodView):
    @require_role("viewer")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, JobLogSchema(many=True))
    def get(self, args: dict[str, Any], job_id: str) -> Any:
        """The job's log, oldest first, with secrets redacted"""
        job, _ = _job(job_id)
        query = select(JobLog).where(col(JobLog.job_id) == job.id)
        rows = [
            {
                "id": log.id,
                "timestamp": log.timestamp,
                "level": log.level,
                "entity_id": log.entity_id,
                "step_id": log.step_id,
                "message": redact(log.message),
                "data": redact(log.data),
            }
            for log in db_session().scalars(keyset_page(query, col(JobLog.id), args, key_type=int))
        ]
        return page_headers(rows, args, "id")


@blp.route("/<job_id>/cancel")
class JobCancel(MethodView):
    @require_role("executor")
    @blp.response(200, JobSchema)
    def post(self, job_id: str) -> Any:
        """Cancel the job (the same as cancelling its run); answers with the job"""
        job, run = _job(job_id)
        if run is None:
            raise NotFound("This job has nothing to cancel.")
        return job_view(job, run_service.cancel_run(session=db_session(), run=run))
