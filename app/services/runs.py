"""Runs: start one over a selection of entities, cancel it, retry its failures."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text, update
from sqlmodel import Session, col

from app.errors import Conflict, NotFound, ValidationFailed
from app.ids import new_id, now_ms
from app.models import Entity, Job, JobLog, Run, RunItem, RunSelection, Workflow
from jobs.queue import TaskQueue

TERMINAL = ("completed", "failed", "cancelled")
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
    commit: bool = True,
) -> Run:
    """Create a run and its job, and queue its dispatch; the fan-out happens in the background.

    ``entity_ids`` are checked (unknown ids or ids of another type → 422 listing them);
    a ``selector`` is evaluated now. With ``commit=False`` the caller commits, and must
    call :func:`queue_dispatch` after its commit.
    """
    if workflow.status == "archived":
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
    now = now_ms()
    run_id, job_id = new_id("run"), new_id("job")
    run = Run(
        id=run_id,
        workspace_id=workflow.workspace_id,
        workflow_id=workflow.id,
        workflow_version=workflow.version,
        job_id=job_id,
        status="pending",
        total=len(ids),
        trigger_type=trigger_type,
        trigger_id=trigger_id,
        retry_of=retry_of,
        input=input,
        steps=workflow.steps,
        settings=workflow.settings,
        created_at=now,
    )
    if not ids:
        # An empty selection is a run that completes at once.
        run.status = "completed"
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
    if commit:
        session.commit()
        queue_dispatch(queue, run)
    return run


def queue_dispatch(queue: TaskQueue, run: Run) -> None:
    """Send a run's dispatch to the workers (a no-op for a run that is already over)."""
    if run.status == "pending":
        queue.enqueue("jobs.dispatch.dispatch_run", run.id)


def get_run(
    *, session: Session, workspace_id: str, run_id: str, workflow_id: str | None = None
) -> Run:
    """The run, or 404 (also for another workspace's, or another workflow's)."""
    run = session.get(Run, run_id)
    if run is None or run.workspace_id != workspace_id:
        raise NotFound("Run not found.")
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


def cancel_run(*, session: Session, run: Run) -> Run:
    """Cancel: pending entities never start; running ones stop at their next step boundary."""
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
    if locked.status == "pending":
        # Not yet dispatched: the items are written here, all cancelled, so the run's
        # items and each entity's runs show it like any other cancelled run.
        cancelled = insert_run_items(session=session, run_id=run.id)
        session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run.id)
            .values(status="cancelled", error="cancelled before it started", completed_at=now)
        )
        session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(
                status="cancelled",
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
                data={"status": "cancelled"},
            )
        )
        session.commit()
    else:
        result = session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run.id, col(RunItem.status) == "pending")
            .values(status="cancelled", error="cancelled before it started", completed_at=now)
        )
        cancelled = result.rowcount  # type: ignore[attr-defined]
        session.execute(
            update(Run)
            .where(col(Run.id) == run.id)
            .values(cancel_requested=True, cancelled=col(Run.cancelled) + cancelled)
        )
        session.commit()
        from jobs.finalize import finalize_run

        finalize_run(session, run.id)
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
            .where(col(RunItem.run_id) == run.id, col(RunItem.status).in_(("failed", "cancelled")))
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
    )
