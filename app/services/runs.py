"""Runs: start one over a selection of entities, cancel it, retry its failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text, update
from sqlmodel import Session, col

from app.errors import Conflict, NotFound, ValidationFailed
from app.ids import new_id, now_ms
from app.models import Entity, Job, JobLog, Run, RunItem, RunSelection, Workflow
from app.queue import DISPATCH_RUN, TaskQueue, enqueue_after_commit
from app.services.approvals import close_for_cancel
from app.services.finalize import finalize_and_notify
from app.services.ownership import get_owned
from app.statuses import TERMINAL, ItemStatus, RunStatus, WorkflowStatus

SQLITE_BATCH = 20_000


def existing_entity_ids(
    session: Session, *, workspace_id: str, entity_type_id: str, ids: list[str]
) -> set[str]:
    """The subset of ``ids`` that are entities of this type in this workspace."""
    found: set[str] = set()
    if session.get_bind().dialect.name == "postgresql":
        # One round trip with an array parameter, however many ids.
        rows = session.execute(
            text(
                "SELECT id FROM entities WHERE workspace_id = :ws AND entity_type_id = :et"
                " AND id = ANY(:ids)"
            ),
            {"ws": workspace_id, "et": entity_type_id, "ids": ids},
        )
        return {row[0] for row in rows}
    for start in range(0, len(ids), SQLITE_BATCH):
        batch = ids[start : start + SQLITE_BATCH]
        found.update(
            session.scalars(
                select(col(Entity.id)).where(
                    col(Entity.workspace_id) == workspace_id,
                    col(Entity.entity_type_id) == entity_type_id,
                    col(Entity.id).in_(batch),
                )
            )
        )
    return found


def select_entity_ids(
    session: Session, *, workspace_id: str, entity_type_id: str, selector: dict[str, Any]
) -> list[str]:
    """Ids of the entities a filter/selector picks (``status``, ``updatedSince``, ``ids``)."""
    query = select(col(Entity.id)).where(
        col(Entity.workspace_id) == workspace_id, col(Entity.entity_type_id) == entity_type_id
    )
    if selector.get("status") is not None:
        query = query.where(col(Entity.status) == selector["status"])
    if selector.get("updated_since") is not None:
        query = query.where(col(Entity.updated_at) >= selector["updated_since"])
    if selector.get("ids") is not None:
        query = query.where(col(Entity.id).in_(selector["ids"]))
    return list(session.scalars(query.order_by(col(Entity.id))))


def start_run(
    *,
    session: Session,
    queue: TaskQueue,
    workflow: Workflow,
    entity_ids: list[str] | None = None,
    selector: dict[str, Any] | None = None,
    input: Any = None,
    trigger_type: str = "manual",
    trigger_id: str | None = None,
    retry_of: str | None = None,
    dry_run: bool = False,
    sample: int | None = None,
    commit: bool = True,
) -> Run:
    """Create a run and its job, and queue its dispatch; the fan-out happens in the background.

    ``entity_ids`` are checked (unknown ids or ids of another type → 422 listing them);
    a ``selector`` is evaluated now. The dispatch leaves for ``queue`` when the session
    commits (with ``commit=False``, when the caller commits). ``sample`` keeps that many entities of
    the selection, spread evenly over it; a ``dry_run`` writes no entity and delivers nothing
    (the engine records each item's would-be ``changes`` instead).
    """
    if workflow.status == WorkflowStatus.ARCHIVED:
        raise Conflict("This workflow is archived; it cannot be run.")
    if entity_ids is not None:
        unique = list(dict.fromkeys(entity_ids))
        found = existing_entity_ids(
            session,
            workspace_id=workflow.workspace_id,
            entity_type_id=workflow.entity_type_id,
            ids=unique,
        )
        if len(found) != len(unique):
            missing = [i for i in unique if i not in found]
            raise ValidationFailed(
                f"{len(missing)} entity id(s) are unknown or not of this workflow's entity type.",
                {"entityIds": missing[:1000]},
            )
        ids = unique
    else:
        ids = select_entity_ids(
            session,
            workspace_id=workflow.workspace_id,
            entity_type_id=workflow.entity_type_id,
            selector=selector or {},
        )
    if sample is not None:
        ids = spread_sample(ids, sample)
    now = now_ms()
    run_id, job_id = new_id("run"), new_id("job")
    run = Run(
        id=run_id,
        workspace_id=workflow.workspace_id,
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        job_id=job_id,
        status=RunStatus.PENDING,
        total=len(ids),
        trigger_type=trigger_type,
        trigger_id=trigger_id,
        retry_of=retry_of,
        dry_run=dry_run,
        input=input,
        steps=workflow.steps,
        settings=workflow.settings,
        created_at=now,
    )
    if not ids:
        # An empty selection is a run that completes at once.
        run.status = RunStatus.COMPLETED
        run.started_at = run.completed_at = now
        session.execute(
            update(Workflow).where(col(Workflow.id) == workflow.id).values(last_run_at=now)
        )
    session.add(run)
    session.add(
        Job(
            id=job_id,
            workspace_id=workflow.workspace_id,
            type="workflow_run",
            run_id=run_id,
            workflow_id=workflow.id,
            created_at=now,
        )
    )
    session.add(RunSelection(run_id=run_id, entity_ids=ids))
    session.flush()
    if run.status == RunStatus.PENDING:  # an empty selection has nothing to dispatch
        enqueue_after_commit(session, queue, DISPATCH_RUN, run.id)
    if commit:
        session.commit()
    return run


def spread_sample(ids: list[str], size: int) -> list[str]:
    """``size`` ids spread evenly over ``ids`` (first, then every len/size-th), in order."""
    if size >= len(ids):
        return ids
    return [ids[(i * len(ids)) // size] for i in range(size)]


def get_run(
    *, session: Session, workspace_id: str, run_id: str, workflow_id: str | None = None
) -> Run:
    """The run, or 404 (also for another workspace's, or another workflow's)."""
    run = get_owned(session, Run, run_id, workspace_id, what="Run")
    if workflow_id is not None and run.workflow_id != workflow_id:
        raise NotFound("Run not found.")
    return run


# The selection's ids expanded into items inside the database, in selection order.
_EXPAND_SELECTION = {
    "postgresql": (
        "INSERT INTO run_items (run_id, seq, entity_id, status, attempts, next_step) "
        "SELECT s.run_id, e.n - 1, e.entity_id, 'pending', 0, 0 FROM run_selections AS s, "
        "jsonb_array_elements_text(s.entity_ids) WITH ORDINALITY AS e(entity_id, n) "
        "WHERE s.run_id = :run_id"
    ),
    "sqlite": (
        "INSERT INTO run_items (run_id, seq, entity_id, status, attempts, next_step) "
        "SELECT s.run_id, e.key, e.value, 'pending', 0, 0 "
        "FROM run_selections AS s, json_each(s.entity_ids) AS e WHERE s.run_id = :run_id"
    ),
}


def insert_run_items(*, session: Session, run_id: str) -> int:
    """Write one pending item per selected entity, in selection order; return how many.

    The ids never leave the database: the selection's JSON array is expanded in SQL.
    """
    dialect = session.get_bind().dialect.name
    sql = _EXPAND_SELECTION.get(dialect)
    if sql is None:
        raise NotImplementedError(f"Conveyor runs on PostgreSQL or SQLite, not {dialect}")
    result = session.execute(text(sql), {"run_id": run_id})
    return int(result.rowcount)  # type: ignore[attr-defined]


def cancel_run(*, session: Session, run: Run, queue: TaskQueue | None = None) -> Run:
    """Cancel: pending entities never start; running ones stop at their next step boundary.

    A run that this cancel finishes sends its summary through ``queue`` (default: the
    process's).
    """
    if run.status in TERMINAL:
        raise Conflict(f"The run is already {run.status}.")
    now = now_ms()
    # Lock the run row so cancel, dispatch and claims/finalize serialise. The caller
    # loaded ``run`` before the lock: populate_existing re-reads the row (dispatch may
    # have written its items and set it running meanwhile) instead of handing back the
    # stale object from the session's identity map.
    locked = session.execute(
        select(Run)
        .where(col(Run.id) == run.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if locked.status in TERMINAL:
        raise Conflict(f"The run is already {locked.status}.")
    if locked.status == RunStatus.PENDING:
        # Not yet dispatched: the items are written here, all cancelled, so the run's
        # items and each entity's runs show it like any other cancelled run.
        cancelled = insert_run_items(session=session, run_id=run.id)
        session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run.id)
            .values(
                status=ItemStatus.CANCELLED, error="cancelled before it started", completed_at=now
            )
        )
        session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(
                status=RunStatus.CANCELLED,
                cancel_requested=True,
                total=cancelled,
                cancelled=cancelled,
                started_at=now,
                completed_at=now,
            )
        )
        session.add(
            JobLog(
                job_id=run.job_id,
                level="warning",
                message=f"run cancelled before it started: {cancelled} cancelled",
                data={"status": RunStatus.CANCELLED},
            )
        )
        session.commit()
    else:
        # Items that never started end here. Items resumed from a checkpoint (a crashed
        # worker's) are left to a lane, which cancels them keeping the changes of the
        # steps they finished (the run's lanes, or the sweeper's within a sweep).
        result = session.execute(
            update(RunItem)
            .where(
                col(RunItem.run_id) == run.id,
                col(RunItem.status) == ItemStatus.PENDING,
                col(RunItem.state).is_(None),
            )
            .values(
                status=ItemStatus.CANCELLED, error="cancelled before it started", completed_at=now
            )
        )
        cancelled = result.rowcount  # type: ignore[attr-defined]
        # Entities waiting at a review gate end cancelled; their approvals close.
        cancelled += close_for_cancel(session, run_id=run.id, now=now)
        session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(cancel_requested=True, cancelled=col(Run.cancelled) + cancelled)
        )
        session.commit()
        if queue is None:
            from app.queue import current

            queue = current().queue
        finalize_and_notify(session, queue, run.id)
    session.refresh(run)
    return run


def retry_run(*, session: Session, queue: TaskQueue, run: Run) -> Run:
    """A new run over the entities that failed or were cancelled in ``run``."""
    if run.status not in TERMINAL:
        raise Conflict("Only a finished run can be retried.")
    workflow = session.get(Workflow, run.workflow_id)
    if workflow is None:
        raise NotFound("The run's workflow no longer exists.")
    ids = list(
        session.scalars(
            select(col(RunItem.entity_id))
            .where(
                col(RunItem.run_id) == run.id,
                col(RunItem.status).in_((ItemStatus.FAILED, ItemStatus.CANCELLED)),
            )
            .order_by(col(RunItem.seq))
        )
    )
    existing = existing_entity_ids(
        session,
        workspace_id=workflow.workspace_id,
        entity_type_id=workflow.entity_type_id,
        ids=ids,
    )
    ids = [i for i in ids if i in existing]  # entities deleted since are skipped
    return start_run(
        session=session,
        queue=queue,
        workflow=workflow,
        entity_ids=ids,
        input=run.input,
        trigger_type="retry",
        trigger_id=run.trigger_id,
        retry_of=run.id,
        dry_run=run.dry_run,
    )


# --- run history ------------------------------------------------------------------------

# Runs removed per batch: bounded IN lists, and a purge commits as it goes.
DELETE_BATCH = 500


def _started_before(ms: int) -> Any:
    """Runs that started before ``ms``; one cancelled before dispatch counts from creation."""
    from sqlalchemy import func

    return func.coalesce(col(Run.started_at), col(Run.created_at)) < ms


def _delete_finished_runs(session: Session, run_ids: list[str]) -> int:
    """Delete the finished ones of ``run_ids`` with their items, selection, job and logs.

    Guarded: a run that is not finished is never deleted, whatever the caller picked.
    Children go first (foreign keys); the caller commits. Returns how many runs went.
    """
    from sqlalchemy import delete

    pairs = session.execute(
        select(col(Run.id), col(Run.job_id)).where(
            col(Run.id).in_(run_ids), col(Run.status).in_(TERMINAL)
        )
    ).all()
    if not pairs:
        return 0
    ids, job_ids = [p[0] for p in pairs], [p[1] for p in pairs]
    session.execute(delete(JobLog).where(col(JobLog.job_id).in_(job_ids)))
    session.execute(delete(RunItem).where(col(RunItem.run_id).in_(ids)))
    session.execute(delete(RunSelection).where(col(RunSelection.run_id).in_(ids)))
    session.execute(delete(Job).where(col(Job.id).in_(job_ids)))
    session.execute(delete(Run).where(col(Run.id).in_(ids)))
    return len(ids)


def delete_run(*, session: Session, run: Run) -> None:
    """Remove a finished run with its items and logs (409 while it is pending or running)."""
    # Lock the row so a delete and a cancel or finalize of the same run serialise.
    locked = session.execute(
        select(Run)
        .where(col(Run.id) == run.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()
    if locked.status not in TERMINAL:
        raise Conflict(f"The run is {locked.status}; cancel it or wait for it to finish first.")
    _delete_finished_runs(session, [run.id])
    session.commit()


def _delete_in_batches(session: Session, *conditions: Any, commit_each: bool) -> int:
    """Delete the finished runs matching ``conditions``, ``DELETE_BATCH`` at a time."""
    deleted = 0
    while True:
        ids = list(
            session.scalars(
                select(col(Run.id))
                .where(col(Run.status).in_(TERMINAL), *conditions)
                .limit(DELETE_BATCH)
            )
        )
        deleted += _delete_finished_runs(session, ids) if ids else 0
        if commit_each:
            session.commit()
        if len(ids) < DELETE_BATCH:
            return deleted


def delete_runs_before(*, session: Session, workflow_id: str, before_ms: int) -> int:
    """Remove a workflow's finished runs that started before ``before_ms``, in one transaction."""
    deleted = _delete_in_batches(
        session, col(Run.workflow_id) == workflow_id, _started_before(before_ms), commit_each=False
    )
    session.commit()
    return deleted


def purge_old_runs(session: Session, *, older_than_ms: int) -> int:
    """Retention (``CONVEYOR_RUN_RETENTION_DAYS``): remove every workspace's finished runs
    that started before ``older_than_ms``; return how many.

    Commits batch by batch, so a large purge never holds one long transaction.
    """
    return _delete_in_batches(session, _started_before(older_than_ms), commit_each=True)
