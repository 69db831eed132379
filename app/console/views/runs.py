"""The run page: live state (JSON with an ETag), items, cancel and retry."""

from __future__ import annotations

import time
from typing import Any

from flask import abort, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from app.api.runs import progress_of
from app.console import auth, formatting, queries
from app.console.blueprint import bp, caller, notice
from app.db import db_session
from app.models import Run, Workflow
from app.queue import get_queue
from app.schemas.runs import ITEM_STATUSES
from app.services import runs as runs_service
from app.statuses import TERMINAL


def _run(run_id: str) -> Run:
    return runs_service.get_run(
        session=db_session(), workspace_id=caller().workspace_id, run_id=run_id
    )


def live_state(run: Run) -> dict[str, Any]:
    """What the run page shows live: progress, rate, ETA, failure reasons, retries."""
    session = db_session()
    progress = progress_of(run)
    progress["awaitingApproval"] = progress.pop("awaiting_approval", 0)
    finished = progress["completed"] + progress["failed"] + progress["cancelled"]
    now = int(time.time() * 1000)
    rate = eta = None
    if run.started_at and finished:
        elapsed = max(((run.completed_at or now) - run.started_at) / 1000, 0.001)
        rate = finished / elapsed
        if run.status not in TERMINAL and rate > 0:
            eta = progress["pending"] / rate
    reasons = [
        {
            "message": message,
            "count": count,
            "url": url_for("console.run", run_id=run.id, status="failed", error=message) + "#items",
        }
        for message, count in queries.failure_reasons(session, run.id)
    ]
    retries = [
        {"id": r.id, "status": r.status, "url": url_for("console.run", run_id=r.id)}
        for r in queries.retries_of(session, run.id)
    ]
    return {
        "id": run.id,
        "status": run.status,
        "terminal": run.status in TERMINAL,
        "progress": progress,
        "finished": finished,
        "rate": rate,
        "etaSeconds": eta,
        "dryRun": run.dry_run,
        "reasons": reasons,
        "retries": retries,
        "error": run.error,
        "startedAt": formatting.when(run.started_at),
        "completedAt": formatting.when(run.completed_at),
    }


def _etag(run: Run) -> str:
    """Changes whenever the live state does: counts, status, waiting entities, retries."""
    retries = len(queries.retries_of(db_session(), run.id))
    awaiting = progress_of(run)["awaiting_approval"]
    counts = f"{run.completed}.{run.failed}.{run.cancelled}.{run.total}.{awaiting}"
    return f'"{run.status}.{counts}.{retries}"'


def _items_args() -> dict[str, Any]:
    status = request.args.get("status") or None
    if status not in (None, *ITEM_STATUSES):
        abort(400, description=f"Unknown item status {status!r}.")
    after = request.args.get("after")
    if after is not None and not after.isdigit():
        abort(400, description="Not a valid page cursor.")
    return {
        "status": status,
        "error": request.args.get("error") or None,
        "after": int(after) if after else None,
    }


@bp.route("/runs/<run_id>")
@auth.require("viewer")
def run(run_id: str) -> Any:
    """The run page: live progress, failure reasons, items, cancel and retry."""
    session = db_session()
    row = _run(run_id)
    args = _items_args()
    workflow_row = session.get(Workflow, row.workflow_id)
    return render_template(
        "console/run.html",
        run=row,
        workflow=workflow_row,
        state=live_state(row),
        items=queries.run_items(session, row.id, **args),
        filters=args,
        statuses=ITEM_STATUSES,
        step_names={s["id"]: s.get("name") or s["id"] for s in row.steps or []},
    )


@bp.route("/runs/<run_id>/live")
@auth.require("viewer")
def run_live(run_id: str) -> Any:
    """The run's live state as JSON, with an ETag so an unchanged run costs a 304."""
    row = _run(run_id)
    etag = _etag(row)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if row.status not in TERMINAL:
        headers["Retry-After"] = "1"
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers=headers)
    response = jsonify(live_state(row))
    response.headers.update(headers)
    return response


@bp.route("/runs/<run_id>/items")
@auth.require("viewer")
def run_items(run_id: str) -> Any:
    """The items table body as an HTML fragment, for the live page to swap in."""
    row = _run(run_id)
    args = _items_args()
    return render_template(
        "console/_items.html",
        run=row,
        items=queries.run_items(db_session(), row.id, **args),
        filters=args,
        step_names={s["id"]: s.get("name") or s["id"] for s in row.steps or []},
    )


@bp.route("/runs/<run_id>/cancel", methods=["POST"])
@auth.require("executor", audit=("run.cancelled", Run, "run_id"))
def cancel_run(run_id: str) -> Any:
    """Cancel through the runs service."""
    row = runs_service.cancel_run(session=db_session(), run=_run(run_id))
    notice(f"Run cancelled: {row.cancelled} entities will not run.")
    return redirect(url_for("console.run", run_id=row.id))


@bp.route("/runs/<run_id>/retry", methods=["POST"])
@auth.require("executor", audit=("run.retried", Run, "run_id"))
def retry_run(run_id: str) -> Any:
    """Retry the failed and cancelled entities as a new, linked run."""
    new = runs_service.retry_run(session=db_session(), queue=get_queue(), run=_run(run_id))
    notice(f"Retrying {new.total} entities of run {run_id}.")
    return redirect(url_for("console.run", run_id=new.id))
