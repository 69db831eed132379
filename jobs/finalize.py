"""Finalize a run exactly once, when every entity has reached a final state."""

from __future__ import annotations

import logging

from sqlalchemy import update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import JobLog, Run, Workflow

log = logging.getLogger(__name__)


def final_status(run: Run) -> str:
    """``cancelled`` once a cancel was accepted, else by tolerated failures.

    A cancel accepted while every entity was already in flight cancels none of them, but
    the client was told the run is cancelled: it ends ``cancelled`` all the same.
    """
    if run.cancel_requested:
        return "cancelled"
    if run.total == 0:
        return "completed"
    tolerated = float((run.settings or {}).get("tolerated_failure_percentage", 0) or 0)
    return "completed" if run.failed / run.total * 100 <= tolerated else "failed"


def finalize_run(session: Session, run_id: str) -> bool:
    """Close the run if all its entities are final; True only for the one caller that did."""
    session.expire_all()
    run = session.get(Run, run_id)
    if run is None or run.status != "running":
        return False
    if run.completed + run.failed + run.cancelled != run.total:
        return False
    now = now_ms()
    status = final_status(run)
    # The guarded UPDATE is the "exactly once": a second finalizer matches no row.
    result = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status) == "running",
            col(Run.completed) + col(Run.failed) + col(Run.cancelled) == col(Run.total),
        )
        .values(status=status, completed_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return False
    session.execute(
        update(Workflow).where(col(Workflow.id) == run.workflow_id).values(last_run_at=now)
    )
    session.add(
        JobLog(
            job_id=run.job_id,
            level="info" if status == "completed" else "warning",
            message=f"run {status}: {run.completed} completed, {run.failed} failed, "
            f"{run.cancelled} cancelled of {run.total}",
            data={"status": status},
        )
    )
    session.commit()
    _notify_finished(session, run_id)
    return True


def _notify_finished(session: Session, run_id: str) -> None:
    """Send the run summary of ``settings.notifyOnFinish`` (at most once: after the commit)."""
    run = session.get(Run, run_id)
    if run is None or not (run.settings or {}).get("notify_on_finish"):
        return
    try:
        from jobs import runtime, services
    except ImportError:
        return
    send = getattr(services, "send_run_summary", None)
    if send is None:
        return
    try:
        send(runtime.current(), run, run.settings)
    except Exception as exc:  # a failed summary must not undo the finished run
        log.warning("run summary for %s not sent: %s", run_id, exc)
        session.add(JobLog(job_id=run.job_id, level="warning", message=f"summary not sent: {exc}"))
        session.commit()
