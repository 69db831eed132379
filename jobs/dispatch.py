"""Dispatch a run: write one item per entity, then start its lanes of chunk jobs."""

from __future__ import annotations

import logging
import math

from sqlalchemy import select, update
from sqlmodel import col

from app.ids import now_ms
from app.models import JobLog, Run
from app.queue import PROCESS_LANE
from app.services.runs import insert_run_items
from app.statuses import RunStatus
from jobs import runtime
from jobs.chunks import has_io

log = logging.getLogger(__name__)

MAX_LANES = 16


def lane_count(run: Run, chunk_size: int, *, io_concurrency: int, workers: int) -> int:
    """How many lanes a run keeps going at once.

    Pure steps: ``concurrency`` entities in flight in chunks of ``chunk_size``. I/O steps:
    a lane holds up to ``io_concurrency`` entities (its process's I/O pool), so one run
    spreads over every worker there is, up to its ``concurrency``.
    """
    concurrency = int((run.settings or {}).get("concurrency", 1000))
    pending = max(1, run.total - run.completed - run.failed - run.cancelled)
    if has_io(run.steps):
        per_lane = max(1, min(io_concurrency, concurrency))
        wide = min(max(1, workers), math.ceil(concurrency / per_lane))
        return max(1, min(MAX_LANES, wide, math.ceil(pending / per_lane)))
    chunk = max(1, min(chunk_size, concurrency))
    return max(1, min(MAX_LANES, math.ceil(concurrency / chunk), math.ceil(pending / chunk)))


def start_lanes(rt: runtime.Runtime, run: Run) -> None:
    """Queue the run's lanes; each lane re-queues itself until no work is left."""
    count = lane_count(
        run,
        rt.settings.chunk_size,
        io_concurrency=rt.settings.worker_io_concurrency,
        workers=rt.queue.workers(),
    )
    for _ in range(count):
        rt.queue.enqueue(PROCESS_LANE, run.id)


def dispatch_run(run_id: str) -> None:
    """Materialise a pending run's items and set it running. Safe to call more than once."""
    rt = runtime.current()
    with rt.session() as session:
        run = session.execute(
            select(Run).where(col(Run.id) == run_id).with_for_update()
        ).scalar_one_or_none()
        if run is None:
            return
        if run.status == RunStatus.RUNNING:
            # Re-dispatched after lost queue state: the items exist; restart the lanes.
            session.commit()
            start_lanes(rt, run)
            return
        if run.status != RunStatus.PENDING:
            session.commit()
            return
        total = insert_run_items(session=session, run_id=run_id)
        now = now_ms()
        session.execute(
            update(Run)
            .where(col(Run.id) == run_id)
            .values(status=RunStatus.RUNNING, started_at=now, heartbeat_at=now, total=total)
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
