"""Finalize a run exactly once, when every entity has reached a final state.

The API (a cancel, an approval decision) and the workers (``jobs.finalize``, the last
lane, the sweeper) close runs through :func:`finalize_run`.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import JobLog, Run, Workflow
from app.queue import NOTIFY_FINISHED, TaskQueue
from app.statuses import RunStatus


def final_status(run: Run) -> RunStatus:
    """``cancelled`` once a cancel was accepted, else by tolerated failures.

    A cancel accepted while every entity was already in flight cancels none of them, but
    the client was told the run is cancelled: it ends ``cancelled`` all the same.
    """
    if run.cancel_requested:
        return RunStatus.CANCELLED
    if run.total == 0:
        return RunStatus.COMPLETED
    tolerated = float((run.settings or {}).get("tolerated_failure_percentage", 0) or 0)
    if run.failed / run.total * 100 <= tolerated:
        return RunStatus.COMPLETED
    return RunStatus.FAILED


def finalize_run(session: Session, run_id: str) -> Run | None:
    """Close the run if all its entities are final; the run only for the one caller that did.

    Commits. The run summary (``settings.notifyOnFinish``) is the caller's to send:
    ``jobs.finalize.finalize_run`` sends it in the worker, :func:`finalize_and_notify`
    queues it.
    """
    session.expire_all()
    run = session.get(Run, run_id)
    if run is None or run.status != RunStatus.RUNNING:
        return None
    if run.completed + run.failed + run.cancelled != run.total:
        return None
    now = now_ms()
    status = final_status(run)
    # The guarded UPDATE is the "exactly once": a second finalizer matches no row.
    result = session.execute(
        update(Run)
        .where(
            col(Run.id) == run_id,
            col(Run.status) == RunStatus.RUNNING,
            col(Run.completed) + col(Run.failed) + col(Run.cancelled) == col(Run.total),
        )
        .values(status=status, completed_at=now)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    session.execute(
        update(Workflow).where(col(Workflow.id) == run.workflow_id).values(last_run_at=now)
    )
    session.add(
        JobLog(
            job_id=run.job_id,
            level="info" if status == RunStatus.COMPLETED else "warning",
            message=f"run {status}: {run.completed} completed, {run.failed} failed, "
            f"{run.cancelled} cancelled of {run.total}",
            data={"status": status},
        )
    )
    session.commit()
    return run


def finalize_and_notify(session: Session, queue: TaskQueue, run_id: str) -> bool:
    """:func:`finalize_run`, then queue the run's summary for a worker to send."""
    run = finalize_run(session, run_id)
    if run is None:
        return False
    if (run.settings or {}).get("notify_on_finish"):
        queue.enqueue(NOTIFY_FINISHED, run_id)
    return True
