"""Save a lane's progress in bulk: group commits of many items, leases kept alive, cancel read.

Items of a lane run concurrently (see ``jobs.chunks``). Whoever moves an item forward hands
the checkpointer a *snapshot* of it (``save``): an immutable copy of the columns to write,
taken by the thread that owns the item, so the writer never reads state that is changing.
One checkpointer thread per lane writes every pending snapshot in ONE transaction — the
items guarded by the lane's claim token, the finished entities, the run's counters — at
least every ``FLUSH_SECONDS``, and at once when a thread waits on ``save_now`` (a step that
must be on record as started before it runs). That is a group commit: many items, one round
trip, and a finished side effect is on disk within a second of finishing.

The same thread renews the lane's lease every ``lease_seconds / 3`` whatever the steps are
doing (a slow call or a long backoff never lets a healthy lane's items be handed to
another), reads whether the run was asked to stop, and marks items ``lost`` when their rows
no longer carry the lane's token: a lost item is never written, and never starts another
side effect, in this lane again. A failed write (the database is down) is kept and retried
with the snapshots that came after it merged in.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session, col

from app import metrics
from app.ids import now_ms
from app.models import Entity, JobLog, Run, RunItem, table_of
from app.redaction import redact
from app.statuses import TERMINAL, ItemStatus
from jobs import merge, runtime
from jobs.bulk import bulk_update
from jobs.claims import Item

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.5  # finished work is saved at least this often
CANCEL_POLL_SECONDS = 0.25  # how often an idle lane asks whether the run was cancelled
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # between failed writes
FINAL_STATUSES: frozenset[str] = frozenset(TERMINAL)
AWAITING_APPROVAL = ItemStatus.AWAITING_APPROVAL


@dataclass
class Snapshot:
    """What one save of one item writes."""

    item: Item
    status: str
    next_step: int
    records: list[dict[str, Any]]
    state: dict[str, Any] | None
    error: str | None
    usage: dict[str, int]
    saved: threading.Event | None = None  # set once written (for ``save_now``)
    changes: dict[str, Any] | None = None  # a dry run's would-be patch and requests

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def parked(self) -> bool:
        """Waiting at a review gate: saved without a claim, lease or worker."""
        return self.status == AWAITING_APPROVAL


def snapshot(item: Item, *, wait: bool = False) -> Snapshot:
    """Copy what a save writes of ``item``; only the thread that owns the item calls this."""
    progress = item.progress
    usage, progress.usage = progress.usage, {"inputTokens": 0, "outputTokens": 0}
    final = progress.status in FINAL_STATUSES
    entity = progress.entity
    state = None
    if not final:
        state = {
            "data": entity.data,
            "status": entity.status,
            "version": item.base_version,
            "published": entity.published,
            "base": item.base,
            "baseStatus": item.base_status,
        }
    return Snapshot(
        item,
        progress.status,
        progress.next_step,
        list(progress.records),
        state,
        progress.error,
        usage,
        threading.Event() if wait else None,
    )


@dataclass
class Checkpointer:
    """The writer of one lane: group commits, lease renewal and the cancel flag."""

    rt: runtime.Runtime
    run_id: str
    job_id: str
    token: str
    secrets: Any = None  # () -> credential values to redact from what is saved
    keep_partial_changes: bool = False
    workspace_id: str = ""
    dry_run: Any = None  # a dry run's services: their ``changes(item)``; no entity is written
    cancel_requested: bool = False
    _dirty: dict[int, Snapshot] = field(default_factory=dict)
    _held: dict[int, Item] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _urgent: bool = False
    _flushing: bool = False
    _closing: bool = False
    _thread: threading.Thread | None = None
    _renewed_at: float = field(default_factory=time.monotonic)
    _polled_at: float = field(default_factory=time.monotonic)
    failures: int = 0

    # -- what the lane calls -------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread."""
        self._thread = threading.Thread(
            target=self._loop, name=f"conveyor-checkpoint-{self.run_id}", daemon=True
        )
        self._thread.start()

    def hold(self, items: list[Item]) -> None:
        """Items this lane has claimed: their lease is renewed until their final save."""
        with self._cond:
            for item in items:
                self._held[item.seq] = item

    def save(self, item: Item) -> None:
        """Queue a save of ``item`` as it is now; written within ``FLUSH_SECONDS``."""
        snap = snapshot(item)
        if self.dry_run is not None and snap.final:
            snap.changes = self.dry_run.changes(item)
        self._put(snap)

    def save_now(self, item: Item) -> bool:
        """Save ``item`` and wait until it is written; False if the lane lost it or is closing.

        For a step that must be on record as started before it runs (at most once).
        """
        snap = snapshot(item, wait=True)
        self._put(snap, urgent=True)
        assert snap.saved is not None
        while not snap.saved.wait(0.1):
            if item.lost or (self._closing and self._thread is None):
                return False
        return not item.lost

    def settle(self, timeout: float = 5.0) -> bool:
        """Write what is pending now and wait for it; True if nothing is left unsaved."""
        with self._cond:
            self._urgent = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: not self._dirty and not self._flushing, timeout)

    @property
    def unsaved(self) -> bool:
        with self._cond:
            return bool(self._dirty) or self._flushing

    def close(self, *, attempts: int = 60) -> bool:
        """Stop the writer after a last flush; False if some progress could not be saved."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for attempt in range(attempts):
            if self._flush_once():
                return True
            time.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
        log.error("run %s: progress of %d items could not be saved", self.run_id, len(self._dirty))
        return False

    # -- the writer thread -----------------------------------------------------------------

    def _put(self, snap: Snapshot, *, urgent: bool = False) -> None:
        with self._cond:
            self._dirty[snap.item.seq] = _merged(snap, self._dirty.get(snap.item.seq))
            if urgent:
                self._urgent = True
                self._cond.notify_all()

    def _loop(self) -> None:
        runtime.install(self.rt, thread_only=True)
        flushed_at = time.monotonic()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._urgent or self._closing, CANCEL_POLL_SECONDS)
                if self._closing:
                    return
                urgent, self._urgent = self._urgent, False
            now = time.monotonic()
            renew = now - self._renewed_at >= self.rt.settings.lease_seconds / 3
            # The run's heartbeat tells the sweeper this lane is alive, even while every
            # entity waits on a long call: beat well within its stall threshold.
            beat = now - flushed_at >= min(
                self.rt.settings.lease_seconds / 3, self.rt.settings.sweep_interval_seconds
            )
            with self._cond:
                dirty = bool(self._dirty)
            if urgent or renew or beat or (dirty and now - flushed_at >= FLUSH_SECONDS):
                if self._flush_once(renew=renew):
                    flushed_at = time.monotonic()
                else:
                    time.sleep(RETRY_SECONDS[min(self.failures - 1, len(RETRY_SECONDS) - 1)])
            elif now - self._polled_at >= CANCEL_POLL_SECONDS:
                self._poll_cancel()

    def _poll_cancel(self) -> None:
        try:
            with self.rt.session() as session:
                requested = session.scalar(
                    select(col(Run.cancel_requested)).where(col(Run.id) == self.run_id)
                )
        except Exception as exc:  # the database is down: the next flush will say
            log.warning("run %s: could not read the cancel flag: %s", self.run_id, exc)
            return
        self.cancel_requested = self.cancel_requested or bool(requested)
        self._polled_at = time.monotonic()

    def _flush_once(self, *, renew: bool = False) -> bool:
        """Write every pending snapshot in one transaction; False (kept for later) on failure."""
        with self._cond:
            batch, self._dirty = self._dirty, {}
            self._flushing = True
        try:
            self._write(list(batch.values()), renew=renew)
        except Exception as exc:
            self.failures += 1
            log.warning("run %s: checkpoint failed (%s); retrying", self.run_id, exc)
            with self._cond:
                for seq, snap in batch.items():
                    self._dirty[seq] = _merged(self._dirty.get(seq) or snap, snap)
                self._flushing = False
                self._cond.notify_all()
            return False
        with self._cond:
            self._flushing = False
            self._cond.notify_all()
        self.failures = 0
        for snap in batch.values():
            if snap.saved is not None:
                snap.saved.set()
        return True

    def _write(self, batch: list[Snapshot], *, renew: bool) -> None:
        secrets = list(self.secrets()) if self.secrets is not None else []
        now = now_ms()
        lease = now + self.rt.settings.lease_seconds * 1000
        with self.rt.session() as session:
            mine: list[Snapshot] = []
            if batch:
                # Only items this lane still holds are written: the claim token guards each row.
                saved = set(
                    bulk_update(
                        session.connection(),
                        table_of(RunItem),
                        [{"seq": s.item.seq, "claim_token": self.token} for s in batch],
                        [_row(s, self.token, secrets, now, lease) for s in batch],
                        fixed={"run_id": self.run_id},
                        returning="seq",
                    )
                )
                for snap in batch:
                    if snap.item.seq in saved:
                        mine.append(snap)
                    else:
                        snap.item.lost = True  # the lease lapsed and another lane took it
            if renew:
                self._renew(session, now, lease, {s.item.seq for s in mine if s.final or s.parked})
            parked = [s for s in mine if s.parked]
            if parked:
                _open_approvals(session, self.run_id, parked)
            done = [s for s in mine if s.final]
            if done and self.dry_run is None:
                self._write_entities(session, done, now)
                _apply_kv_writes(session, self.workspace_id, self.job_id, done)
            counts: dict[str, int] = {str(status): 0 for status in FINAL_STATUSES}
            for snap in done:
                counts[snap.status] += 1
                if snap.status == ItemStatus.FAILED:
                    session.add(
                        JobLog(
                            job_id=self.job_id,
                            level="error",
                            entity_id=snap.item.entity_id,
                            step_id=_failed_step(snap.records),
                            message=redact(snap.error or "failed", secrets),
                            timestamp=now,
                        )
                    )
            requested = session.execute(
                update(Run)
                .where(col(Run.id) == self.run_id)
                .values(
                    completed=col(Run.completed) + counts["completed"],
                    failed=col(Run.failed) + counts["failed"],
                    cancelled=col(Run.cancelled) + counts["cancelled"],
                    input_tokens=col(Run.input_tokens) + sum(s.usage["inputTokens"] for s in mine),
                    output_tokens=col(Run.output_tokens)
                    + sum(s.usage["outputTokens"] for s in mine),
                    heartbeat_at=now,
                )
                .returning(col(Run.cancel_requested))
            ).scalar()
            session.commit()
        self.cancel_requested = self.cancel_requested or bool(requested)
        self._polled_at = time.monotonic()
        with self._cond:
            for snap in done + parked:
                self._held.pop(snap.item.seq, None)
            for snap in batch:
                if snap.item.lost:
                    self._held.pop(snap.item.seq, None)
        self._record_metrics(mine)

    def _renew(self, session: Session, now: int, lease: int, finishing: set[int]) -> None:
        """Extend the lease of every item the lane holds; mark the ones it no longer holds."""
        with self._cond:
            held = [i for seq, i in self._held.items() if seq not in finishing and not i.lost]
        self._renewed_at = time.monotonic()
        if not held:
            return
        kept = set(
            session.execute(
                update(RunItem)
                .where(
                    col(RunItem.run_id) == self.run_id,
                    col(RunItem.claim_token) == self.token,
                    col(RunItem.status) == ItemStatus.RUNNING,
                )
                .values(lease_expires_at=lease)
                .returning(col(RunItem.seq))
                .execution_options(synchronize_session=False)
            ).scalars()
        )
        for item in held:
            if item.seq not in kept:
                item.lost = True

    def _write_entities(self, session: Session, done: list[Snapshot], now: int) -> None:
        """Save finished entities' changes, version bumped; merge over concurrent writes.

        A failed entity keeps its stored data unless the workflow keeps partial changes; a
        cancelled one keeps the changes of the steps it finished.
        """
        changed = [
            s
            for s in done
            if (s.status != ItemStatus.FAILED or self.keep_partial_changes)
            and (
                s.item.progress.entity.data != s.item.base
                or s.item.progress.entity.status != s.item.base_status
                or s.item.progress.entity.published
            )
        ]
        if changed:
            write_entities(session, [s.item for s in changed], now)

    def _record_metrics(self, saved: list[Snapshot]) -> None:
        """Count the step records saved since the last checkpoint into the metrics."""
        records = []
        for snap in saved:
            item = snap.item
            for record in snap.records[item.observed :]:
                if record.get("status") == "started":
                    break  # a marker before a side effect; the step's own record replaces it
                records.append(record)
                item.observed += 1
        if records:
            metrics.observe_step_records(metrics.store_for(self.rt.settings), records)


def _merged(newer: Snapshot, older: Snapshot | None) -> Snapshot:
    """``newer`` carrying the token usage ``older`` had not saved yet."""
    if older is None or older is newer:
        return newer
    for key in ("inputTokens", "outputTokens"):
        newer.usage[key] += older.usage[key]
    older.usage = {"inputTokens": 0, "outputTokens": 0}
    if older.saved is not None and newer.saved is None:
        newer.saved = older.saved
    return newer


def _row(snap: Snapshot, token: str, secrets: list[str], now: int, lease: int) -> dict[str, Any]:
    """The run_items columns one snapshot writes."""
    final = snap.final
    parked = snap.status == ItemStatus.AWAITING_APPROVAL
    return {
        "status": snap.status if final or parked else ItemStatus.RUNNING,
        "next_step": snap.next_step,
        "step_results": [
            {
                **r,
                "output": redact(r.get("output"), secrets),
                "error": redact(r.get("error"), secrets),
            }
            for r in snap.records
        ],
        "state": snap.state,
        "error": redact(snap.error, secrets) if snap.error else None,
        "lease_expires_at": None if final or parked else lease,
        "claim_token": None if final or parked else token,
        "completed_at": now if final else None,
        "changes": snap.changes,
    }


def _open_approvals(session: Session, run_id: str, parked: list[Snapshot]) -> None:
    """Open a pending approval for each entity that reached a review gate."""
    from app.services.approvals import open_approvals

    run = session.get(Run, run_id)
    assert run is not None
    items = []
    for snap in parked:
        gate = snap.records[-1]
        outputs = {
            r["stepId"]: r["output"] for r in snap.records if r["status"] == ItemStatus.COMPLETED
        }
        entity = snap.item.progress.entity
        items.append(
            {
                "seq": snap.item.seq,
                "entity_id": snap.item.entity_id,
                "step_id": gate["stepId"],
                # what the reviewer judges: the entity as the run has it, with the outputs
                "preview": {"data": entity.data, "status": entity.status, "steps": outputs},
                "instructions": (gate.get("output") or {}).get("instructions"),
                "timeout_hours": None,
            }
        )
    open_approvals(session, run=run, items=items)


def _apply_kv_writes(
    session: Session, workspace_id: str, job_id: str, done: list[Snapshot]
) -> None:
    """Apply the ``kvSet``/``kvIncr`` of the entities that completed, atomically with them.

    Increments of one key are summed over the batch (one statement per key). A write the
    store refuses (an increment of a non-number) is logged on the job and skipped: it must
    not undo the entities' completion.
    """
    from app.errors import ConveyorError
    from app.services.kv import apply_kv_writes

    sets: dict[str, Any] = {}
    increments: dict[str, float] = {}
    for snap in done:
        if snap.status != ItemStatus.COMPLETED:
            continue
        for record in snap.records:
            output = record.get("output") if record.get("status") == ItemStatus.COMPLETED else None
            if not isinstance(output, dict):
                continue
            sets.update(output.get("kvSet") or {})
            for ref, amount in (output.get("kvIncr") or {}).items():
                increments[ref] = increments.get(ref, 0) + amount
    if not (sets or increments):
        return
    try:
        with session.begin_nested():
            apply_kv_writes(session, workspace_id=workspace_id, sets=sets, increments=increments)
    except ConveyorError as exc:
        session.add(JobLog(job_id=job_id, level="error", message=f"KV writes not applied: {exc}"))


def _redacted(record: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """A step record with secrets taken out of what the step produced."""
    return {
        **record,
        "output": redact(record.get("output"), secrets),
        "error": redact(record.get("error"), secrets),
    }


def _failed_step(records: list[dict[str, Any]]) -> str | None:
    """The id of the step an item failed at, if any."""
    for record in reversed(records):
        if record.get("status") == ItemStatus.FAILED:
            return str(record["stepId"])
    return None


def write_entities(session: Session, items: list[Item], now: int) -> None:
    """Save entities' working copies with their version bumped; merge over concurrent writes."""
    # Fast path: one guarded UPDATE for the entities nobody else wrote meanwhile.
    for published in (False, True):
        group = [i for i in items if i.progress.entity.published is published]
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
        items = [i for i in items if i.entity_id not in written]
    if items:
        _merge_entities(session, items, now)


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
