"""Process a run in chunks: claim entities, walk them step by step, checkpoint in bulk.

A *lane* is a chain of ``process_lane`` jobs for one run. Each job claims a chunk of
pending items (never more than ``settings.concurrency`` in flight for the run), runs them
through the workflow one step at a time for the whole chunk, and checkpoints every item
after every step in one transaction. Progress counters move in the same transaction as
the items' final states, guarded by the claim token, so they are exact. After a short
time slice the lane re-queues itself, so several runs share the workers fairly.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session

from app.ids import now_ms
from app.models import Entity, EntityType, JobLog, Run, RunItem, Workflow
from app.redaction import redact
from jobs import merge, runtime
from jobs.finalize import finalize_run
from steps.base import EntityState
from steps.pipeline import SIDE_EFFECT_TYPES, EntityProgress, RunInfo, run_step

log = logging.getLogger(__name__)

LANE_SLICE_SECONDS = 2.0


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


def process_lane(run_id: str) -> None:
    """RQ job: process chunks of ``run_id`` for a time slice, then re-queue or finalize."""
    rt = runtime.current()
    slice_ends = time.monotonic() + LANE_SLICE_SECONDS
    while True:
        chunk = claim_chunk(rt, run_id)
        if chunk is None:
            break
        execute_chunk(rt, chunk)
        if time.monotonic() > slice_ends:
            rt.queue.enqueue("jobs.chunks.process_lane", run_id)
            return
    with rt.session() as session:
        finalize_run(session, run_id)


def claim_chunk(rt: runtime.Runtime, run_id: str) -> Chunk | None:
    """Claim up to a chunk of pending items, within the run's concurrency; None if none."""
    with rt.session() as session:
        run = session.execute(
            select(Run).where(Run.id == run_id).with_for_update()
        ).scalar_one_or_none()
        if run is None or run.status != "running" or run.cancel_requested:
            session.commit()
            return None
        concurrency = int((run.settings or {}).get("concurrency", 1000))
        in_flight = session.scalar(
            select(func.count()).where(RunItem.run_id == run_id, RunItem.status == "running")
        )
        room = min(rt.settings.chunk_size, concurrency - int(in_flight or 0))
        if room <= 0:
            session.commit()
            return None
        seqs = list(
            session.scalars(
                select(RunItem.seq)
                .where(RunItem.run_id == run_id, RunItem.status == "pending")
                .order_by(RunItem.seq)
                .limit(room)
                .with_for_update(skip_locked=True)
            )
        )
        if not seqs:
            session.commit()
            return None
        token = uuid.uuid4().hex
        now = now_ms()
        session.execute(
            update(RunItem)
            .where(RunItem.run_id == run_id, RunItem.seq.in_(seqs))
            .values(
                status="running",
                claim_token=token,
                lease_expires_at=now + rt.settings.lease_seconds * 1000,
                attempts=RunItem.attempts + 1,
                started_at=func.coalesce(RunItem.started_at, now),
            )
        )
        session.execute(update(Run).where(Run.id == run_id).values(heartbeat_at=now))
        rows = (
            session.execute(select(RunItem).where(RunItem.run_id == run_id, RunItem.seq.in_(seqs)))
            .scalars()
            .all()
        )
        workflow = session.get(Workflow, run.workflow_id)
        entity_type = session.get(EntityType, workflow.entity_type_id) if workflow else None
        info = RunInfo(
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
        chunk = Chunk(run.id, run.job_id, run.workspace_id, token, info)
        items = _load_items(session, list(rows))
        session.commit()
    chunk.items = items
    return chunk


def _load_items(session: Session, rows: list[RunItem]) -> list[Item]:
    """Items with their working state: resumed from a checkpoint, or fresh from the entity."""
    fresh_ids = [r.entity_id for r in rows if not r.state]
    entities = (
        {e.id: e for e in session.scalars(select(Entity).where(Entity.id.in_(fresh_ids)))}
        if fresh_ids
        else {}
    )
    items = []
    for row in sorted(rows, key=lambda r: r.seq):
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
        progress = EntityProgress(
            entity=entity.copy(), next_step=row.next_step, records=list(row.step_results or [])
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
    """Walk the chunk's items through the steps, checkpointing after each step."""
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
    # Items that could not start (deleted entity) are final at once.
    ready = [i for i in chunk.items if i.progress.done]
    if ready:
        _checkpoint(rt, chunk, ready, services)
    for index, step in enumerate(info.steps):
        group = [
            i
            for i in chunk.items
            if not i.lost and not i.progress.done and i.progress.next_step == index
        ]
        if not group:
            continue
        if _cancel_requested(rt, chunk.run_id):
            active = [i for i in chunk.items if not i.lost and not i.progress.done]
            for item in active:
                item.progress.status, item.progress.error = "cancelled", "run cancelled"
            _checkpoint(rt, chunk, active, services)
            return
        if step["type"] in SIDE_EFFECT_TYPES:
            _mark_started(rt, chunk, group, step)
        for item in group:
            _run_one(rt, chunk, item, step, services, deadlines[item.seq])
        _checkpoint(rt, chunk, group, services)
    leftovers = [i for i in chunk.items if not i.lost and not i.progress.done]
    for item in leftovers:  # ran past the last step without a final state
        item.progress.status = "completed"
    if leftovers:
        _checkpoint(rt, chunk, leftovers, services)


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
            .where(RunItem.run_id == chunk.run_id, RunItem.claim_token == chunk.token)
            .values(lease_expires_at=now + lease * 1000)
        )
        session.execute(update(Run).where(Run.id == chunk.run_id).values(heartbeat_at=now))
        session.commit()


def _cancel_requested(rt: runtime.Runtime, run_id: str) -> bool:
    """True once the run has been asked to stop."""
    with rt.session() as session:
        return bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def _mark_started(
    rt: runtime.Runtime, chunk: Chunk, group: list[Item], step: dict[str, Any]
) -> None:
    """Record, before a side effect, that the step started (so a resume knows)."""
    marker = {
        "stepId": step["id"],
        "type": step["type"],
        "status": "started",
        "output": None,
        "error": None,
        "durationMs": 0,
        "attempts": 0,
    }
    for item in group:
        if not (item.progress.records and item.progress.records[-1].get("status") == "started"):
            item.progress.records.append(dict(marker))
    _checkpoint(rt, chunk, group, None, final=False)
    for item in group:
        if item.progress.records and item.progress.records[-1] == marker:
            item.progress.records.pop()


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


def _checkpoint(
    rt: runtime.Runtime, chunk: Chunk, items: list[Item], services: Any, *, final: bool = True
) -> None:
    """Write items' progress, final entities and run counters in one transaction."""
    if not items:
        return
    secrets = services.secrets() if services is not None and hasattr(services, "secrets") else []
    now = now_ms()
    with rt.session() as session:
        held = dict(
            session.execute(
                select(RunItem.seq, RunItem.claim_token)
                .where(RunItem.run_id == chunk.run_id, RunItem.seq.in_([i.seq for i in items]))
                .with_for_update()
            ).all()
        )
        mine = []
        for item in items:
            if held.get(item.seq) == chunk.token:
                mine.append(item)
            else:
                item.lost = True  # the lease expired and another lane took it over
        if not mine:
            session.commit()
            return
        done = [i for i in mine if final and i.progress.done]
        if done:
            _write_entities(session, done, now)
        lease = now + rt.settings.lease_seconds * 1000
        params = []
        for item in mine:
            terminal = final and item.progress.done
            error = redact(item.progress.error, secrets) if item.progress.error else None
            params.append(
                {
                    "b_run_id": chunk.run_id,
                    "b_seq": item.seq,
                    "status": item.progress.status if terminal else "running",
                    "next_step": item.progress.next_step,
                    "step_results": redact(item.progress.records, secrets),
                    "state": _state(item),
                    "error": error,
                    "lease_expires_at": None if terminal else lease,
                    "claim_token": None if terminal else chunk.token,
                    "completed_at": now if terminal else None,
                }
            )
        items_table = RunItem.__table__  # Core UPDATE: one executemany for the whole chunk
        session.connection().execute(
            update(items_table)
            .where(
                items_table.c.run_id == bindparam("b_run_id"),
                items_table.c.seq == bindparam("b_seq"),
            )
            .values(
                status=bindparam("status"),
                next_step=bindparam("next_step"),
                step_results=bindparam("step_results"),
                state=bindparam("state"),
                error=bindparam("error"),
                lease_expires_at=bindparam("lease_expires_at"),
                claim_token=bindparam("claim_token"),
                completed_at=bindparam("completed_at"),
            ),
            params,
        )
        counts = {"completed": 0, "failed": 0, "cancelled": 0}
        tokens_in = tokens_out = 0
        for item in done:
            counts[item.progress.status] += 1
            tokens_in += item.progress.usage["inputTokens"]
            tokens_out += item.progress.usage["outputTokens"]
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
        session.execute(
            update(Run)
            .where(Run.id == chunk.run_id)
            .values(
                completed=Run.completed + counts["completed"],
                failed=Run.failed + counts["failed"],
                cancelled=Run.cancelled + counts["cancelled"],
                input_tokens=Run.input_tokens + tokens_in,
                output_tokens=Run.output_tokens + tokens_out,
                heartbeat_at=now,
            )
        )
        session.commit()
    _record_metrics(items)


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
    current = {
        e.id: e
        for e in session.execute(
            select(Entity).where(Entity.id.in_([i.entity_id for i in changed])).with_for_update()
        ).scalars()
    }
    params = []
    for item in changed:
        row = current.get(item.entity_id)
        if row is None:
            continue  # deleted while the run worked on it
        entity = item.progress.entity
        if row.version == item.base_version:
            data, status = entity.data, entity.status
        else:
            # Someone else wrote meanwhile: apply only what this run changed.
            data = merge.merge(item.base, entity.data, row.data)
            status = entity.status if entity.status != item.base_status else row.status
        version = row.version + 1
        params.append(
            {
                "b_id": row.id,
                "data": data,
                "status": status,
                "version": version,
                "updated_at": now,
                "published_at": now if entity.published else row.published_at,
                "published_version": version if entity.published else row.published_version,
            }
        )
    if params:
        entities_table = Entity.__table__
        session.connection().execute(
            update(entities_table)
            .where(entities_table.c.id == bindparam("b_id"))
            .values(
                data=bindparam("data"),
                status=bindparam("status"),
                version=bindparam("version"),
                updated_at=bindparam("updated_at"),
                published_at=bindparam("published_at"),
                published_version=bindparam("published_version"),
            ),
            params,
        )


def _record_metrics(items: list[Item]) -> None:
    """Feed step durations and outcomes to the metrics registry."""
    try:
        from jobs import metrics
    except ImportError:
        return
    metrics.observe_items(items)
