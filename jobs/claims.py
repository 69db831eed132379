"""Claim a run's pending items for a lane, and load what the steps need to work on them.

A claim is one guarded statement: it moves up to ``limit`` pending items to ``running``
under the lane's claim token and a lease, never past the run's ``settings.concurrency``
entities in flight across all workers. Every later write of those items (checkpoints,
lease renewals) is guarded by the same token, so a lane whose lease lapsed and whose items
were handed to another lane can no longer write them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import Entity, EntityType, Run, RunItem, Workflow
from app.statuses import ItemStatus, RunStatus
from jobs import runtime
from steps.base import EntityState
from steps.pipeline import EntityProgress, RunInfo


@dataclass
class Item:
    """One claimed entity: its progress and the entity as the run first loaded it."""

    seq: int
    entity_id: str
    progress: EntityProgress
    base: dict[str, Any]  # entity data when the run first loaded it
    base_status: str
    base_version: int
    lost: bool = False  # another lane holds it now: this one must not touch it again
    observed: int = 0  # step records already counted in the metrics


@dataclass
class Claim:
    """Items claimed in one statement, with the run they belong to."""

    run_id: str
    job_id: str
    workspace_id: str
    token: str
    info: RunInfo
    cancel_requested: bool = False
    full: bool = False  # no room: the run has ``concurrency`` entities in flight already
    items: list[Item] = field(default_factory=list)


def claim_items(
    rt: runtime.Runtime,
    run_id: str,
    token: str,
    limit: int,
    info: RunInfo | None = None,
    *,
    to_cancel: bool = False,
) -> Claim | None:
    """Claim up to ``limit`` pending items of a running run; None when there are none to take.

    ``info`` is the run's pinned workflow from an earlier claim of the same lane. A run
    asked to stop returns a claim with no items and ``cancel_requested`` set, unless
    ``to_cancel``: then its pending items are claimed (whatever the concurrency) so the
    lane can end them ``cancelled`` and keep the changes their finished steps made.
    """
    if limit <= 0:
        return None
    with rt.session() as session:
        run = session.execute(
            select(Run)
            .where(col(Run.id) == run_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one_or_none()
        if run is None or run.status != RunStatus.RUNNING:
            session.commit()
            return None
        if info is None:
            info = run_info(session, run)
        claim = Claim(run.id, run.job_id, run.workspace_id, token, info, run.cancel_requested)
        if run.cancel_requested and not to_cancel:
            session.commit()
            return claim
        room = limit
        if not to_cancel:
            concurrency = int((run.settings or {}).get("concurrency", 1000))
            in_flight = session.scalar(
                select(func.count()).where(
                    col(RunItem.run_id) == run_id, col(RunItem.status) == ItemStatus.RUNNING
                )
            )
            room = min(limit, concurrency - int(in_flight or 0))
        if room <= 0:
            session.commit()
            claim.full = True
            return claim
        # Materialized, so the pick runs exactly once: as a plain IN (subquery) PostgreSQL
        # may run it again per row, and SKIP LOCKED then skips the rows this very UPDATE
        # has just changed and picks more, past the LIMIT. Joined (UPDATE ... FROM picked),
        # so each picked item is found through the primary key.
        picked = (
            select(col(RunItem.seq))
            .where(col(RunItem.run_id) == run_id, col(RunItem.status) == ItemStatus.PENDING)
            .order_by(col(RunItem.seq))
            .limit(room)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        now = now_ms()
        rows = session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run_id, col(RunItem.seq) == picked.c.seq)
            .values(
                status=ItemStatus.RUNNING,
                claim_token=token,
                lease_expires_at=now + rt.settings.lease_seconds * 1000,
                attempts=col(RunItem.attempts) + 1,
                started_at=func.coalesce(col(RunItem.started_at), now),
            )
            .returning(
                col(RunItem.seq),
                col(RunItem.entity_id),
                col(RunItem.state),
                col(RunItem.next_step),
                col(RunItem.step_results),
            )
            .execution_options(synchronize_session=False)
        ).all()
        if not rows:
            session.commit()
            return None
        session.execute(update(Run).where(col(Run.id) == run_id).values(heartbeat_at=now))
        session.commit()  # the run's row lock is held only while claiming
        claim.items = load_items(session, run_id, token, sorted(rows, key=lambda r: r.seq))
        session.commit()
    return claim


def pinned_info(rt: runtime.Runtime, run_id: str) -> RunInfo | None:
    """The run's pinned workflow, or None if the run is gone."""
    with rt.session() as session:
        run = session.get(Run, run_id)
        return run_info(session, run) if run is not None else None


def run_info(session: Session, run: Run) -> RunInfo:
    """What the steps need to know of the run: its pinned steps, settings and schema."""
    workflow = session.get(Workflow, run.workflow_id)
    entity_type = session.get(EntityType, workflow.entity_type_id) if workflow else None
    return RunInfo(
        run={
            "id": run.id,
            "workflowId": run.workflow_id,
            "trigger": {"type": run.trigger_type, "triggerId": run.trigger_id},
        },
        steps=run.steps,
        settings=run.settings or {},
        input=run.input,
        entity_schema=entity_type.schema_ if entity_type else None,
        dry_run=bool(run.dry_run),
    )


def load_items(session: Session, run_id: str, token: str, rows: list[Any]) -> list[Item]:
    """Items with their working state: resumed from a checkpoint, or fresh from the entity."""
    entities = {}
    if any(not r.state for r in rows):
        claimed = (
            select(col(Entity.id), col(Entity.data), col(Entity.status), col(Entity.version))
            .join(RunItem, col(RunItem.entity_id) == col(Entity.id))
            .where(
                col(RunItem.run_id) == run_id,
                col(RunItem.status) == ItemStatus.RUNNING,
                col(RunItem.claim_token) == token,
            )
        )
        entities = {e.id: e for e in session.execute(claimed)}
    items = []
    for row in rows:
        if row.state:
            state = row.state
            entity = EntityState(
                row.entity_id,
                state["data"],
                state["status"],
                state["version"],
                state.get("published", False),
            )
            base, base_status, base_version = state["base"], state["baseStatus"], state["version"]
        else:
            found = entities.get(row.entity_id)
            if found is None:
                entity = EntityState(row.entity_id, {}, "", 0)
                progress = EntityProgress(
                    entity, status=ItemStatus.FAILED, error="entity was deleted"
                )
                items.append(Item(row.seq, row.entity_id, progress, {}, "", 0))
                continue
            entity = EntityState(found.id, found.data, found.status, found.version)
            base, base_status, base_version = found.data, found.status, found.version
        # Steps change a copy of the entity (see run_step), so ``base`` stays as loaded.
        progress = EntityProgress(
            entity=entity, next_step=row.next_step, records=list(row.step_results or [])
        )
        items.append(
            Item(
                row.seq,
                row.entity_id,
                progress,
                base,
                base_status,
                base_version,
                # Counted by the worker that ran them; a trailing started marker is not.
                observed=sum(1 for r in progress.records if r.get("status") != "started"),
            )
        )
    return items
