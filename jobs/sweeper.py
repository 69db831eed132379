"""The sweeper: notices stuck work (dead workers, lost Redis state) and sets it going again."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import exists, select, update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import Run, RunItem
from app.queue import DISPATCH_RUN
from app.services.approvals import expire_approvals
from app.services.runs import purge_old_runs
from app.statuses import ItemStatus, RunStatus
from jobs import runtime
from jobs.dispatch import start_lanes
from jobs.finalize import finalize_run

log = logging.getLogger(__name__)

MAX_WORKER_LOSSES = 3  # an item whose lease lapsed this many times fails, quarantined


def sweep(rt: runtime.Runtime) -> dict[str, int]:
    """One pass: release expired leases, restart stalled runs, finalize finished ones."""
    now = now_ms()
    stall_ms = max(2 * rt.settings.sweep_interval_seconds, 3) * 1000
    stats = {"released": 0, "restarted": 0, "redispatched": 0, "finalized": 0, "quarantined": 0}
    with rt.session() as session:
        runs = list(
            session.scalars(
                select(Run).where(col(Run.status).in_((RunStatus.PENDING, RunStatus.RUNNING)))
            )
        )
        session.commit()
    for run in runs:
        with rt.session() as session:
            if run.status == RunStatus.PENDING:
                if now - (run.heartbeat_at or run.created_at) > stall_ms:
                    # The dispatch job was lost (Redis restarted, or never reached a worker).
                    session.execute(
                        update(Run).where(col(Run.id) == run.id).values(heartbeat_at=now)
                    )
                    session.commit()
                    rt.queue.enqueue(DISPATCH_RUN, run.id)
                    stats["redispatched"] += 1
                continue
            stats["quarantined"] += _quarantine(session, run, now)
            released = session.execute(
                update(RunItem)
                .where(
                    col(RunItem.run_id) == run.id,
                    col(RunItem.status) == ItemStatus.RUNNING,
                    col(RunItem.lease_expires_at) < now,
                )
                .values(status=ItemStatus.PENDING, claim_token=None, lease_expires_at=None)
            ).rowcount  # type: ignore[attr-defined]
            stats["released"] += released
            has_pending = session.scalar(
                select(
                    exists().where(
                        col(RunItem.run_id) == run.id, col(RunItem.status) == ItemStatus.PENDING
                    )
                )
            )
            stalled = (run.heartbeat_at or 0) < now - stall_ms
            if has_pending and (stalled or released) and not run.cancel_requested:
                session.execute(update(Run).where(col(Run.id) == run.id).values(heartbeat_at=now))
                session.commit()
                start_lanes(rt, run)
                stats["restarted"] += 1
                continue
            if run.cancel_requested and has_pending:
                # Released items of a cancelled run never start again. Those that never
                # started end here; those with a checkpoint go to a lane, which writes the
                # changes of the steps they finished as it cancels them.
                cancelled = session.execute(
                    update(RunItem)
                    .where(
                        col(RunItem.run_id) == run.id,
                        col(RunItem.status) == ItemStatus.PENDING,
                        col(RunItem.state).is_(None),
                    )
                    .values(status=ItemStatus.CANCELLED, error="run cancelled", completed_at=now)
                ).rowcount  # type: ignore[attr-defined]
                session.execute(
                    update(Run)
                    .where(col(Run.id) == run.id)
                    .values(cancelled=col(Run.cancelled) + cancelled, heartbeat_at=now)
                )
                session.commit()
                if stalled or released:
                    start_lanes(rt, run)
                    stats["restarted"] += 1
                continue
            session.commit()
            if finalize_run(session, run.id):
                stats["finalized"] += 1
    with rt.session() as session:
        stats["expired"] = expire_approvals(session, queue=rt.queue, now_ms=now)
    stats["purged"] = _purge_if_due(rt, now)
    return stats


_purged_at = 0.0
PURGE_EVERY_SECONDS = 3600.0


def _purge_if_due(rt: runtime.Runtime, now: int) -> int:
    """Remove finished runs past ``CONVEYOR_RUN_RETENTION_DAYS``, at most once an hour."""
    global _purged_at
    days = rt.settings.run_retention_days
    if not days or time.monotonic() - _purged_at < PURGE_EVERY_SECONDS and _purged_at:
        return 0
    _purged_at = time.monotonic()
    with rt.session() as session:
        return purge_old_runs(session, older_than_ms=now - days * 86_400_000)


def _quarantine(session: Session, run: Run, now: int) -> int:
    """Fail the items whose worker was lost ``MAX_WORKER_LOSSES`` times, instead of
    handing them to yet another worker (an entity that crashes every worker it meets)."""
    rows = session.execute(
        select(col(RunItem.seq), col(RunItem.attempts), col(RunItem.next_step))
        .where(
            col(RunItem.run_id) == run.id,
            col(RunItem.status) == ItemStatus.RUNNING,
            col(RunItem.lease_expires_at) < now,
            col(RunItem.attempts) >= MAX_WORKER_LOSSES,
        )
        .with_for_update()
    ).all()
    for row in rows:
        step = run.steps[row.next_step]["id"] if row.next_step < len(run.steps) else "(end)"
        session.execute(
            update(RunItem)
            .where(col(RunItem.run_id) == run.id, col(RunItem.seq) == row.seq)
            .values(
                status=ItemStatus.FAILED,
                error=f"quarantined: worker lost {row.attempts} times while running step {step}",
                claim_token=None,
                lease_expires_at=None,
                state=None,
                completed_at=now,
            )
        )
    if rows:
        session.execute(
            update(Run).where(col(Run.id) == run.id).values(failed=col(Run.failed) + len(rows))
        )
    return len(rows)


def run_sweeper(rt: runtime.Runtime, stop: threading.Event) -> None:
    """Sweep every ``sweep_interval_seconds`` until ``stop`` is set."""
    runtime.install(rt, thread_only=True)
    while not stop.wait(rt.settings.sweep_interval_seconds):
        try:
            stats = sweep(rt)
            if any(stats.values()):
                log.info("sweep: %s", ", ".join(f"{k} {v}" for k, v in stats.items() if v))
        except Exception:  # the sweeper must outlive a database or Redis outage
            log.exception("sweep failed; retrying at the next interval")


def start_sweeper_thread(rt: runtime.Runtime) -> threading.Event:
    """Start a daemon sweeper thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(
        target=run_sweeper, args=(rt, stop), name="conveyor-sweeper", daemon=True
    ).start()
    return stop
