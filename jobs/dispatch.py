"""Dispatch a run: write one item per entity, then start its lanes of chunk jobs."""

from __future__ import annotations

import logging
import math

from sqlalchemy import insert, select, text, update
from sqlmodel import Session

from app.ids import now_ms
from app.models import JobLog, Run, RunItem, RunSelection
from jobs import runtime

log = logging.getLogger(__name__)

INSERT_BATCH = 5_000
MAX_LANES = 16

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


def lane_count(run: Run, chunk_size: int) -> int:
    """How many chunk jobs a run keeps going at once: ``concurrency`` entities in flight."""
    concurrency = int((run.settings or {}).get("concurrency", 1000))
    chunk = max(1, min(chunk_size, concurrency))
    pending = max(1, run.total - run.completed - run.failed - run.cancelled)
    return max(1, min(MAX_LANES, math.ceil(concurrency / chunk), math.ceil(pending / chunk)))


def start_lanes(rt: runtime.Runtime, run: Run) -> None:
    """Queue the run's lanes; each lane re-queues itself until no work is left."""
    for _ in range(lane_count(run, rt.settings.chunk_size)):
        rt.queue.enqueue("jobs.chunks.process_lane", run.id)


def _insert_items(session: Session, run_id: str) -> int:
    """Write one pending item per selected entity, in selection order; return how many.

    The ids never leave the database: the selection's JSON array is expanded in SQL.
    """
    sql = _EXPAND_SELECTION.get(session.get_bind().dialect.name)
    if sql is None:
        return _insert_items_from_python(session, run_id)
    result = session.execute(text(sql), {"run_id": run_id})
    return int(result.rowcount)  # type: ignore[attr-defined]


def _insert_items_from_python(session: Session, run_id: str) -> int:
    """The portable way: read the ids and insert them in batches."""
    selection = session.get(RunSelection, run_id)
    ids = list(selection.entity_ids) if selection else []
    for start in range(0, len(ids), INSERT_BATCH):
        session.execute(
            insert(RunItem),
            [
                {"run_id": run_id, "seq": start + i, "entity_id": entity_id}
                for i, entity_id in enumerate(ids[start : start + INSERT_BATCH])
            ],
        )
    return len(ids)


def dispatch_run(run_id: str) -> None:
    """Materialise a pending run's items and set it running. Safe to call more than once."""
    rt = runtime.current()
    with rt.session() as session:
        run = session.execute(
            select(Run).where(Run.id == run_id).with_for_update()
        ).scalar_one_or_none()
        if run is None:
            return
        if run.status == "running":
            # Re-dispatched after lost queue state: the items exist; restart the lanes.
            session.commit()
            start_lanes(rt, run)
            return
        if run.status != "pending":
            session.commit()
            return
        total = _insert_items(session, run_id)
        now = now_ms()
        session.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(status="running", started_at=now, heartbeat_at=now, total=total)
        )
        session.add(JobLog(job_id=run.job_id, message=f"run started over {total} entities"))
        session.commit()
        session.refresh(run)
    if run.total == 0:
        from jobs.finalize import finalize_run

        with rt.session() as session:
            finalize_run(session, run_id)
        return
    start_lanes(rt, run)
