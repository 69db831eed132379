"""Process a run in chunks: claim entities, walk them step by step, checkpoint in bulk.

A *lane* is a chain of ``process_lane`` jobs for one run. Each job claims a chunk of
pending items (never more than ``settings.concurrency`` in flight for the run) and runs
them through the workflow one step at a time for the whole chunk. Progress is written in
bulk *checkpoints*: one transaction that saves the items, the finished entities and the
run's counters together, guarded by the claim token, so the counts are exact.

A chunk checkpoints before and after every side-effect step (``ai_generate``,
``publish``, ``notify``), at least every ``CHECKPOINT_SECONDS`` of pure steps, and when
it ends. Pure steps (``transform``, ``validate``, ``condition``) change nothing outside
the working copy, so a worker that dies between checkpoints costs only their re-run;
a finished side effect is never repeated. After a short time slice the lane re-queues
itself, so several runs share the workers fairly.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import Entity, EntityType, JobLog, Run, RunItem, Workflow, table_of
from app.redaction import redact
from jobs import merge, metrics, runtime
from jobs.bulk import bulk_update
from jobs.finalize import finalize_run
from steps.base import EntityState
from steps.pipeline import SIDE_EFFECT_TYPES, EntityProgress, RunInfo, run_step

log = logging.getLogger(__name__)

LANE_SLICE_SECONDS = 2.0
CHECKPOINT_SECONDS = 1.0  # pure steps are saved at least this often
CANCEL_POLL_SECONDS = 0.5  # between checkpoints, how often a chunk asks if it was cancelled


@dataclass
class Item:
    """One claimed entity of the chunk."""

    seq: int
    entity_id: str
    progress: EntityProgress
    base: dict[str, Any]  # entity data when the run first loaded it
    base_status: str
    base_version: int
    started_at: int
    lost: bool = False
    observed: int = 0  # step records already counted in the metrics


@dataclass
class Chunk:
    """A claimed chunk: the run's pinned workflow and the items this lane holds."""

    run_id: str
    job_id: str
    workspace_id: str
    token: str
    info: RunInfo
    items: list[Item] = field(default_factory=list)
    lease_extended_at: float = field(default_factory=time.monotonic)
    cancel_checked_at: float = field(default_factory=time.monotonic)
    cancel_requested: bool = False


def process_lane(run_id: str) -> None:
    """RQ job: process chunks of ``run_id`` for a time slice, then re-queue or finalize."""
    rt = runtime.current()
    slice_ends = time.monotonic() + LANE_SLICE_SECONDS
    info: RunInfo | None = None
    while True:
        chunk = claim_chunk(rt, run_id, info)
        if chunk is None:
            break
        info = chunk.info
        execute_chunk(rt, chunk)
        if time.monotonic() > slice_ends:
            rt.queue.enqueue("jobs.chunks.process_lane", run_id)
            return
    with rt.session() as session:
        finalize_run(session, run_id)


def claim_chunk(rt: runtime.Runtime, run_id: str, info: RunInfo | None = None) -> Chunk | None:
    """Claim up to a chunk of pending items, within the run's concurrency; None if none.

    ``info`` is the run's pinned workflow from an earlier chunk of the same lane.
    """
    with rt.session() as session:
        run = session.execute(
            select(Run).where(col(Run.id) == run_id).with_for_update()
        ).scalar_one_or_none()
        if run is None or run.status != "running" or run.cancel_requested:
            session.commit()
            return None
        concurrency = int((run.settings or {}).get("concurrency", 1000))
        in_flight = session.scalar(
            select(func.count()).where(
                col(RunItem.run_id) == run_id, col(RunItem.status) == "running"
            )
        )
        room = min(rt.settings.chunk_size, concurrency - int(in_flight or 0))
        if room <= 0:
            session.commit()
            return None
        # Materialized, so the pick runs exactly once: as a plain IN (subquery) PostgreSQL
        # may run it again per row, and SKIP LOCKED then skips the rows this very UPDATE
        # has just changed and picks more, past the LIMIT. Joined (UPDATE ... FROM picked),
        # so each picked item is found through the primary key.
        picked = (
            select(col(RunItem.seq))
            .where(col(RunItem.run_id) == run_id, col(RunItem.status) == "pending")
            .order_by(col(RunItem.seq))
            .limit(room)
            .with_for_update(skip_locked=True)
            .cte("picked")
            .prefix_with("MATERIALIZED")
        )
        token = uuid.uuid4().hex
        now = now_ms()
        rows = session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run_id, col(RunItem.seq) == picked.c.seq)
            .values(
                status="running",
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
                col(RunItem.started_at),
            )
            .execution_options(synchronize_session=False)
        ).all()
        if not rows:
            session.commit()
            return None
        session.execute(update(Run).where(col(Run.id) == run_id).values(heartbeat_at=now))
        if info is None:
            info = _run_info(session, run)
        chunk = Chunk(run.id, run.job_id, run.workspace_id, token, info)
        session.commit()  # the run's row lock is held only while claiming
        chunk.items = _load_items(session, run_id, token, sorted(rows, key=lambda r: r.seq))
        session.commit()
    return chunk


def _run_info(session: Session, run: Run) -> RunInfo:
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
    )


def _load_items(session: Session, run_id: str, token: str, rows: list[Any]) -> list[Item]:
    """Items with their working state: resumed from a checkpoint, or fresh from the entity."""
    entities = {}
    if any(not r.state for r in rows):
        claimed = (
            select(col(Entity.id), col(Entity.data), col(Entity.status), col(Entity.version))
            .join(RunItem, col(RunItem.entity_id) == col(Entity.id))
            .where(
                col(RunItem.run_id) == run_id,
                col(RunItem.status) == "running",
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
                progress = EntityProgress(entity, status="failed", error="entity was deleted")
                items.append(Item(row.seq, row.entity_id, progress, {}, "", 0, row.started_at or 0))
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
                row.started_at or now_ms(),
                # Counted by the worker that ran them; a trailing started marker is not.
                observed=sum(1 for r in progress.records if r.get("status") != "started"),
            )
        )
    return items


def _services(rt: runtime.Runtime, chunk: Chunk) -> Any:
    """Side-effect clients for the steps (LLM, HTTP delivery, notifications)."""
    try:
        from jobs.services import build_services
    except ImportError:
        return None
    return build_services(rt, chunk.workspace_id, chunk.run_id)


def execute_chunk(rt: runtime.Runtime, chunk: Chunk) -> None:
    """Walk the chunk's items through the steps, checkpointing around side effects."""
    info = chunk.info
    services = _services(rt, chunk)
    timeout = float(info.settings.get("entity_timeout_seconds") or 0) or None
    mono_now, wall_now = time.monotonic(), now_ms()
    deadlines = {
        item.seq: mono_now + (item.started_at + timeout * 1000 - wall_now) / 1000
        if timeout
        else None
        for item in chunk.items
    }
    # Unsaved progress, by seq; items that could not start (deleted entity) are final at once.
    unsaved = {i.seq: i for i in chunk.items if i.progress.done}
    saved_at = time.monotonic()
    for index, step in enumerate(info.steps):
        group = [
            i
            for i in chunk.items
            if not i.lost and not i.progress.done and i.progress.next_step == index
        ]
        if not group:
            continue
        side_effect = step["type"] in SIDE_EFFECT_TYPES
        if side_effect:
            _mark_started(rt, chunk, group, step, list(unsaved.values()), services)
            unsaved.clear()
            saved_at = time.monotonic()
        elif time.monotonic() - chunk.cancel_checked_at > CANCEL_POLL_SECONDS:
            _poll_cancel(rt, chunk)
        if chunk.cancel_requested:
            active = [i for i in chunk.items if not i.lost and not i.progress.done]
            for item in active:
                item.progress.status, item.progress.error = "cancelled", "run cancelled"
                unsaved[item.seq] = item
            _checkpoint(rt, chunk, list(unsaved.values()), services)
            return
        for item in group:
            _run_one(rt, chunk, item, step, services, deadlines[item.seq])
            unsaved[item.seq] = item
        if side_effect or time.monotonic() - saved_at > CHECKPOINT_SECONDS:
            _checkpoint(rt, chunk, list(unsaved.values()), services)
            unsaved.clear()
            saved_at = time.monotonic()
    for item in chunk.items:  # ran past the last step without a final state
        if not item.lost and not item.progress.done:
            item.progress.status = "completed"
            unsaved[item.seq] = item
    _checkpoint(rt, chunk, list(unsaved.values()), services)


def _run_one(
    rt: runtime.Runtime,
    chunk: Chunk,
    item: Item,
    step: dict[str, Any],
    services: Any,
    deadline: float | None,
) -> None:
    """Run one entity's current step, resuming an interrupted side effect correctly."""
    records = item.progress.records
    if records and records[-1].get("status") == "started":
        interrupted = records.pop()
        if interrupted["type"] == "notify":
            # At most once: a notification that may have gone out is not sent again.
            records.append(
                {
                    **interrupted,
                    "status": "completed",
                    "output": {"channel": None, "delivered": None},
                    "error": "worker stopped during this step; not re-sent (at most once)",
                }
            )
            item.progress.next_step += 1
            if item.progress.next_step >= len(chunk.info.steps):
                item.progress.status = "completed"
            return
    run_step(item.progress, chunk.info, services=services, deadline=deadline)
    _extend_lease_if_due(rt, chunk)


def _extend_lease_if_due(rt: runtime.Runtime, chunk: Chunk) -> None:
    """Keep the claim alive during long steps (LLM calls under rate limits)."""
    lease = rt.settings.lease_seconds
    if time.monotonic() - chunk.lease_extended_at < lease / 3:
        return
    chunk.lease_extended_at = time.monotonic()
    with rt.session() as session:
        now = now_ms()
        session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == chunk.run_id, col(RunItem.claim_token) == chunk.token)
            .values(lease_expires_at=now + lease * 1000)
        )
        session.execute(update(Run).where(col(Run.id) == chunk.run_id).values(heartbeat_at=now))
        session.commit()


def _poll_cancel(rt: runtime.Runtime, chunk: Chunk) -> None:
    """Read whether the run has been asked to stop."""
    with rt.session() as session:
        requested = session.scalar(
            select(col(Run.cancel_requested)).where(col(Run.id) == chunk.run_id)
        )
    chunk.cancel_requested = bool(requested)
    chunk.cancel_checked_at = time.monotonic()


def _mark_started(
    rt: runtime.Runtime,
    chunk: Chunk,
    group: list[Item],
    step: dict[str, Any],
    unsaved: list[Item],
    services: Any,
) -> None:
    """Save, before a side effect, the unsaved progress and that the step started.

    The ``started`` record tells a resumed entity the side effect may have happened; in
    this worker the step's own record replaces it, so it comes off again after the save.
    Items resumed with a marker already in place keep theirs (``_run_one`` handles it).
    """
    marker = {
        "stepId": step["id"],
        "type": step["type"],
        "status": "started",
        "output": None,
        "error": None,
        "durationMs": 0,
        "attempts": 0,
    }
    marked = [
        i
        for i in group
        if not (i.progress.records and i.progress.records[-1].get("status") == "started")
    ]
    for item in marked:
        item.progress.records.append(dict(marker))
    seqs = {i.seq for i in group}
    _checkpoint(rt, chunk, group + [i for i in unsaved if i.seq not in seqs], services)
    for item in marked:
        item.progress.records.pop()


def _redact_records(records: list[dict[str, Any]], secrets: list[str]) -> list[dict[str, Any]]:
    """Step records with secrets taken out of what steps produced (outputs and errors)."""
    return [
        {
            **record,
            "output": redact(record.get("output"), secrets),
            "error": redact(record.get("error"), secrets),
        }
        for record in records
    ]


def _state(item: Item) -> dict[str, Any]:
    """The checkpointed working copy of an item's entity."""
    entity = item.progress.entity
    return {
        "data": entity.data,
        "status": entity.status,
        "version": item.base_version,
        "published": entity.published,
        "base": item.base,
        "baseStatus": item.base_status,
    }


def _checkpoint(rt: runtime.Runtime, chunk: Chunk, items: list[Item], services: Any) -> None:
    """Write items' progress, finished entities and run counters in one transaction.

    Also reads whether the run was asked to stop, into ``chunk.cancel_requested``.
    """
    if not items:
        return
    secrets = services.secrets() if services is not None and hasattr(services, "secrets") else []
    now = now_ms()
    lease = now + rt.settings.lease_seconds * 1000
    values = []
    for item in items:
        terminal = item.progress.done
        values.append(
            {
                "status": item.progress.status if terminal else "running",
                "next_step": item.progress.next_step,
                "step_results": _redact_records(item.progress.records, secrets),
                "state": None if terminal else _state(item),
                "error": redact(item.progress.error, secrets) if item.progress.error else None,
                "lease_expires_at": None if terminal else lease,
                "claim_token": None if terminal else chunk.token,
                "completed_at": now if terminal else None,
            }
        )
    with rt.session() as session:
        # Only items this lane still holds are written: the claim token guards each row.
        saved = set(
            bulk_update(
                session.connection(),
                table_of(RunItem),
                [{"seq": i.seq, "claim_token": chunk.token} for i in items],
                values,
                fixed={"run_id": chunk.run_id},
                returning="seq",
            )
        )
        mine = []
        for item in items:
            if item.seq in saved:
                mine.append(item)
            else:
                item.lost = True  # the lease expired and another lane took it over
        if not mine:
            session.commit()
            return
        done = [i for i in mine if i.progress.done]
        if done:
            _write_entities(session, done, now)
        counts = {"completed": 0, "failed": 0, "cancelled": 0}
        tokens_in = sum(i.progress.usage["inputTokens"] for i in mine)
        tokens_out = sum(i.progress.usage["outputTokens"] for i in mine)
        for item in done:
            counts[item.progress.status] += 1
            if item.progress.status == "failed":
                session.add(
                    JobLog(
                        job_id=chunk.job_id,
                        level="error",
                        entity_id=item.entity_id,
                        step_id=_failed_step(item),
                        message=redact(item.progress.error or "failed", secrets),
                        timestamp=now,
                    )
                )
        requested = session.execute(
            update(Run)
            .where(col(Run.id) == chunk.run_id)
            .values(
                completed=col(Run.completed) + counts["completed"],
                failed=col(Run.failed) + counts["failed"],
                cancelled=col(Run.cancelled) + counts["cancelled"],
                input_tokens=col(Run.input_tokens) + tokens_in,
                output_tokens=col(Run.output_tokens) + tokens_out,
                heartbeat_at=now,
            )
            .returning(col(Run.cancel_requested))
        ).scalar()
        session.commit()
    for item in mine:  # token usage is counted once, by the checkpoint that saved it
        item.progress.usage = {"inputTokens": 0, "outputTokens": 0}
    chunk.cancel_requested = bool(requested)
    chunk.cancel_checked_at = time.monotonic()
    _record_metrics(rt, mine)


def _failed_step(item: Item) -> str | None:
    """The id of the step an item failed at, if any."""
    for record in reversed(item.progress.records):
        if record.get("status") == "failed":
            return str(record["stepId"])
    return None


def _write_entities(session: Session, items: list[Item], now: int) -> None:
    """Save finished entities' changes with their version bumped; merge over concurrent writes."""
    changed = [
        i
        for i in items
        if i.progress.entity.data != i.base
        or i.progress.entity.status != i.base_status
        or i.progress.entity.published
    ]
    if not changed:
        return
    # Fast path: one guarded UPDATE for the entities nobody else wrote meanwhile.
    for published in (False, True):
        group = [i for i in changed if i.progress.entity.published is published]
        if not group:
            continue
        values = []
        for item in group:
            value: dict[str, Any] = {
                "data": item.progress.entity.data,
                "status": item.progress.entity.status,
                "version": item.base_version + 1,
                "updated_at": now,
            }
            if published:
                value |= {"published_at": now, "published_version": item.base_version + 1}
            values.append(value)
        written = set(
            bulk_update(
                session.connection(),
                table_of(Entity),
                [{"id": i.entity_id, "version": i.base_version} for i in group],
                values,
                returning="id",
            )
        )
        changed = [i for i in changed if i.entity_id not in written]
    if changed:
        _merge_entities(session, changed, now)


def _merge_entities(session: Session, items: list[Item], now: int) -> None:
    """Save entities someone else changed while the run worked: apply only the run's edits."""
    current = {
        row.id: row
        for row in session.execute(
            select(col(Entity.id), col(Entity.data), col(Entity.status), col(Entity.version))
            .where(col(Entity.id).in_([i.entity_id for i in items]))
            .with_for_update()
        )
    }
    for item in items:
        row = current.get(item.entity_id)
        if row is None:
            continue  # deleted while the run worked on it
        entity = item.progress.entity
        data = merge.merge(item.base, entity.data, row.data)
        status = entity.status if entity.status != item.base_status else row.status
        value: dict[str, Any] = {
            "data": data,
            "status": status,
            "version": row.version + 1,
            "updated_at": now,
        }
        if entity.published:
            value |= {"published_at": now, "published_version": row.version + 1}
        session.execute(update(Entity).where(col(Entity.id) == row.id).values(**value))


def _record_metrics(rt: runtime.Runtime, items: list[Item]) -> None:
    """Count the step records saved since the last checkpoint into the metrics."""
    records = []
    for item in items:
        for record in item.progress.records[item.observed :]:
            if record.get("status") == "started":
                break  # a marker before a side effect; the step's own record replaces it
            records.append(record)
            item.observed += 1
    if records:
        metrics.observe_step_records(metrics.store_for(rt.settings), records)
