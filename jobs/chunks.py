"""Run a lane of a run: claim items, walk each through its steps, save progress in bulk.

A *lane* is a chain of ``process_lane`` jobs for one run. A lane claims pending items
(``jobs.claims``) under one claim token and hands every change to its checkpointer
(``jobs.checkpoint``), which writes them in group commits and keeps the lease alive.

**Pipelined, concurrent I/O.** Each claimed item walks through *its own* remaining steps:
an entity that finished ``ai_generate`` goes on to ``validate`` and ``publish`` while
others are still waiting on the model, and one slow call holds up nothing but its own
entity. Items of a run with an I/O step (any step type whose ``SIDE_EFFECT`` is not
``none``) run on the process's I/O pool of ``CONVEYOR_WORKER_IO_CONCURRENCY`` threads; a
lane claims only as many items as the pool has free threads, and claims more as they free
up, so the pool stays full without any item waiting for a thread. Items of a pure
workflow are walked inline by the lane thread, which is the fastest way under the GIL.

*Threads, not asyncio*: a step type is a plain synchronous function (``run(config, ctx)``)
calling blocking clients (httpx, smtplib), and keeping that contract keeps every step
simple to write and test. A thread blocked on a socket releases the GIL, so a few hundred
threads give a few hundred calls in flight per process with no step code changed; the
rate limiter, the credential cache and the checkpointer are thread-safe, and the template
sandbox keeps its limits per render. What paces the calls is the shared rate limiter, not
the thread count: every worker books its slots there, so the pool only has to be big enough
to fill the provider's budget at its latency.

**Clocks, cancel, side effects.** An entity's ``entityTimeoutSeconds`` starts when this
worker starts (or resumes) *that entity*, never when its claim was made. Before every step
an item checks the run's cancel flag (read by the checkpointer at least every 0.25 s) and
whether its lane still holds it. A step whose side effect is *at most once* (``notify``) is
first saved as ``started`` and waits for that write; a resumed item that finds such a marker
does not run the step again. An *idempotent* side effect (``publish``, ``ai_generate``) is
saved within a second of finishing, so a crash repeats at most the calls in flight.

**Sharing workers.** A lane works for a time slice; if other jobs are queued then, it stops
claiming, lets its in-flight items finish and re-queues itself behind them; if nothing else
is waiting it goes on. When Redis cannot take the re-queue, the lane simply keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select
from sqlmodel import col

from app.models import RunItem
from app.queue import PROCESS_LANE
from app.statuses import ItemStatus
from jobs import runtime
from jobs.checkpoint import Checkpointer
from jobs.claims import Claim, Item, claim_items, pinned_info
from jobs.dry_run import DryRunServices
from jobs.finalize import finalize_run
from steps.base import SideEffect
from steps.pipeline import RunInfo, run_step, side_effect_of

log = logging.getLogger(__name__)

PURE_SLICE_SECONDS = 2.0  # a lane of pure steps re-queues itself this often (when others wait)
IO_SLICE_SECONDS = 20.0  # a lane of I/O steps, which drains its in-flight items first


class IOPool:
    """The process's threads for items that wait on I/O, and the count of free ones."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self._free = self.size
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(self.size, thread_name_prefix="conveyor-io")

    def acquire(self, wanted: int) -> int:
        """Take up to ``wanted`` free threads; how many were taken."""
        with self._lock:
            taken = max(0, min(wanted, self._free))
            self._free -= taken
            return taken

    def release(self, count: int = 1) -> None:
        """Give back ``count`` threads."""
        with self._lock:
            self._free = min(self.size, self._free + count)


_pools: dict[int, IOPool] = {}
_pools_lock = threading.Lock()


def io_pool(size: int) -> IOPool:
    """The process-wide I/O pool of ``size`` threads."""
    with _pools_lock:
        pool = _pools.get(size)
        if pool is None:
            pool = _pools[size] = IOPool(size)
        return pool


def has_io(steps: list[dict[str, Any]]) -> bool:
    """True when some step of the workflow waits on something outside the process."""
    return any(side_effect_of(step["type"]) is not SideEffect.NONE for step in steps)


def process_lane(run_id: str) -> None:
    """RQ job: work on ``run_id`` for a time slice, then re-queue or finalize."""
    rt = runtime.current()
    while True:
        more = Lane(rt, run_id).run()
        if not more:
            break
        try:
            rt.queue.enqueue(PROCESS_LANE, run_id)
            return
        except RedisError as exc:  # Redis is down: keep the run moving in this process
            log.warning("run %s: could not re-queue its lane (%s); going on here", run_id, exc)
    with rt.session() as session:
        finalize_run(session, run_id)


class Lane:
    """One time slice of work on one run in this process."""

    def __init__(self, rt: runtime.Runtime, run_id: str) -> None:
        self.rt = rt
        self.run_id = run_id
        self.token = uuid.uuid4().hex
        self.pool = io_pool(rt.settings.worker_io_concurrency)
        self.checkpointer: Checkpointer | None = None
        self.info: RunInfo | None = None
        self.services: Any = None
        self.active = 0  # items on the I/O pool, not yet finished
        self.full = False  # the last claim found the run at its concurrency
        self.cond = threading.Condition()

    def run(self) -> bool:
        """Claim and process items until the slice ends; True if the run may have more."""
        started = time.monotonic()
        more = False
        self.info = pinned_info(self.rt, self.run_id)
        if self.info is None:
            return False
        try:
            while True:
                slice_seconds = IO_SLICE_SECONDS if self._io else PURE_SLICE_SECONDS
                if self._cancelled:
                    self._cancel_pending()
                    break
                if time.monotonic() - started > slice_seconds and self._others_waiting():
                    more = True
                    break
                claim, wanted = self._claim()
                if claim is None:
                    if self._cancelled:
                        continue
                    if wanted < 0:  # the pool is busy: wait for a thread to free up
                        self._wait_for_room()
                        continue
                    if self.full and self._room_may_come():
                        continue
                    break  # nothing left to claim, or others hold the run's concurrency
                self._start(claim)
        finally:
            self._drain()
        return more

    @property
    def _io(self) -> bool:
        assert self.info is not None
        return has_io(self.info.steps)

    @property
    def _cancelled(self) -> bool:
        return self.checkpointer is not None and self.checkpointer.cancel_requested

    def _others_waiting(self) -> bool:
        try:
            return self.rt.queue.depth() > 0
        except RedisError:
            return False

    def _claim(self) -> tuple[Claim | None, int]:
        """Claim what the lane can take now: (claim, wanted); wanted < 0 when the pool is full."""
        chunk = self.rt.settings.chunk_size
        if not self._io:
            claim = claim_items(self.rt, self.run_id, self.token, chunk, self.info)
            return self._accept(claim), chunk
        # Refill in batches (a claim is a transaction), but never leave the pool idle.
        batch = max(1, min(chunk, self.pool.size // 8))
        with self.cond:
            active = self.active
        wanted = self.pool.acquire(chunk)
        if wanted < batch and (active > 0 or wanted == 0):
            self.pool.release(wanted)
            return None, -1
        try:
            claim = claim_items(self.rt, self.run_id, self.token, wanted, self.info)
        except BaseException:
            self.pool.release(wanted)
            raise
        claim = self._accept(claim)
        self.pool.release(wanted - (len(claim.items) if claim else 0))
        return claim, wanted

    def _room_may_come(self) -> bool:
        """The run is at its concurrency: wait if this lane's own items will make room."""
        with self.cond:
            active = self.active
        if active:
            self._wait_for_room()
            return True
        cp = self.checkpointer
        if cp is not None and cp.unsaved:  # finished items not yet written still count
            cp.settle()
            return True
        return False

    def _accept(self, claim: Claim | None) -> Claim | None:
        """Set the lane up from its first claim; None when it brought no items."""
        self.full = claim is not None and claim.full
        if claim is None:
            return None
        if self.checkpointer is None:
            self.services = _services(self.rt, claim)
            dry_run = DryRunServices(self.services) if claim.info.dry_run else None
            if dry_run is not None:
                self.services = dry_run
            settings = claim.info.settings
            self.checkpointer = Checkpointer(
                self.rt,
                claim.run_id,
                claim.job_id,
                self.token,
                secrets=self.services.secrets,
                keep_partial_changes=bool(settings.get("keep_partial_changes")),
                cancel_requested=claim.cancel_requested,
                workspace_id=claim.workspace_id,
                dry_run=dry_run,
            )
            self.checkpointer.start()
        if claim.cancel_requested:
            self.checkpointer.cancel_requested = True
        return claim if claim.items else None

    def _cancel_pending(self) -> None:
        """End the run's pending items ``cancelled``, keeping what their finished steps did.

        Items resumed after a crash carry a checkpoint; the cancel endpoint leaves those to
        a lane, which writes their entity changes as for any item that stops at cancel.
        """
        cp = self.checkpointer
        assert cp is not None
        while True:
            claim = claim_items(
                self.rt,
                self.run_id,
                self.token,
                self.rt.settings.chunk_size,
                self.info,
                to_cancel=True,
            )
            if claim is None or not claim.items:
                return
            cp.hold(claim.items)
            for item in claim.items:
                if not item.progress.done:
                    item.progress.status, item.progress.error = (
                        ItemStatus.CANCELLED,
                        "run cancelled",
                    )
                cp.save(item)

    def _start(self, claim: Claim) -> None:
        """Hand the claimed items to the I/O pool, or walk them here."""
        assert self.checkpointer is not None
        self.checkpointer.hold(claim.items)
        if not self._io:
            for item in claim.items:
                self._walk(item)
            return
        with self.cond:
            self.active += len(claim.items)
        for item in claim.items:
            self.pool.executor.submit(self._walk_on_pool, item)

    def _wait_for_room(self) -> None:
        """Until one of this lane's items finishes (it notifies), or a short while."""
        with self.cond:
            self.cond.wait(0.5 if self.active else 0.2)

    def _walk_on_pool(self, item: Item) -> None:
        runtime.install(self.rt, thread_only=True)
        try:
            self._walk(item)
        finally:
            self.pool.release()
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    def _walk(self, item: Item) -> None:
        """Take one item through its remaining steps, saving around its side effects."""
        cp, info = self.checkpointer, self.info
        assert cp is not None and info is not None
        timeout = float(info.settings.get("entity_timeout_seconds") or 0) or None
        started = time.monotonic()  # its own clock, from when this worker starts it
        progress = item.progress

        def should_stop() -> bool:
            return cp.cancel_requested or item.lost

        try:
            while not progress.done and progress.next_step < len(info.steps):
                if item.lost:
                    return
                if cp.cancel_requested:
                    progress.status, progress.error = ItemStatus.CANCELLED, "run cancelled"
                    break
                step = info.steps[progress.next_step]
                kind = side_effect_of(step["type"])
                if _resume_interrupted(item, info, kind):
                    continue
                if kind is SideEffect.AT_MOST_ONCE and not self._mark_started(item, step):
                    if item.lost:
                        return
                    progress.status, progress.error = ItemStatus.CANCELLED, "run cancelled"
                    break
                deadline = None
                if timeout:  # turns waited for (rate limits) do not count
                    deadline = started + timeout + progress.paused
                run_step(
                    progress,
                    info,
                    services=self.services,
                    deadline=deadline,
                    should_stop=should_stop,
                )
                if progress.status == ItemStatus.AWAITING_APPROVAL and info.dry_run:
                    _pass_gate(progress)  # nobody approves a rehearsal
                if kind is not SideEffect.NONE and not progress.done:
                    cp.save(item)  # a finished side effect is on record within a second
            if not progress.done:
                progress.status = ItemStatus.COMPLETED
        except Exception as exc:  # the engine's own failure on this item: fail it alone
            log.exception("run %s: entity %s failed in the engine", self.run_id, item.entity_id)
            progress.status, progress.error = ItemStatus.FAILED, f"{type(exc).__name__}: {exc}"
        if not item.lost:
            cp.save(item)

    def _mark_started(self, item: Item, step: dict[str, Any]) -> bool:
        """Put on record that an at-most-once step is starting; False if it must not start."""
        cp = self.checkpointer
        assert cp is not None
        records = item.progress.records
        records.append(started_marker(step))
        saved = cp.save_now(item)
        records.pop()  # in memory, the step's own record replaces the marker
        return saved and not cp.cancel_requested

    def _drain(self) -> None:
        """Wait for the items on the pool, then write the last of the lane's progress."""
        with self.cond:
            self.cond.wait_for(lambda: self.active == 0)
        if self.checkpointer is not None:
            self.checkpointer.close()


def _pass_gate(progress: Any) -> None:
    """In a dry run a review gate is passed as if approved (the record says so)."""
    record = progress.records[-1]
    record["status"] = ItemStatus.COMPLETED
    record["output"] = {**(record.get("output") or {}), "decision": "approved", "dryRun": True}
    progress.status = ItemStatus.RUNNING
    progress.next_step += 1


def started_marker(step: dict[str, Any]) -> dict[str, Any]:
    """The record saved before an at-most-once step runs: it may have happened."""
    return {
        "stepId": step["id"],
        "type": step["type"],
        "status": "started",
        "output": None,
        "error": None,
        "durationMs": 0,
        "attempts": 0,
    }


def _resume_interrupted(item: Item, info: RunInfo, kind: SideEffect) -> bool:
    """Handle a step a crashed worker left marked ``started``; True if it was settled here."""
    records = item.progress.records
    if not (records and records[-1].get("status") == "started"):
        return False
    interrupted = records.pop()
    if kind is not SideEffect.AT_MOST_ONCE:
        return False  # safe to run again: the marker just goes
    # At most once: a side effect that may have gone out is not repeated.
    config = info.config(item.progress.next_step)
    records.append(
        {
            **interrupted,
            "status": ItemStatus.COMPLETED,
            "output": {"channel": config.get("channel"), "delivered": None},
            "error": "worker stopped during this step; not re-sent (at most once)",
        }
    )
    item.progress.next_step += 1
    if item.progress.next_step >= len(info.steps):
        item.progress.status = ItemStatus.COMPLETED
    return True


def _services(rt: runtime.Runtime, claim: Claim) -> Any:
    """Side-effect clients for the steps (LLM, HTTP delivery, notifications)."""
    from jobs.step_services import build_services

    return build_services(rt, claim.workspace_id, claim.run_id)


def held_items(rt: runtime.Runtime, run_id: str, token: str) -> list[int]:
    """Seqs of the items a claim token holds (for tests and diagnostics)."""
    with rt.session() as session:
        return list(
            session.scalars(
                select(col(RunItem.seq)).where(
                    col(RunItem.run_id) == run_id, col(RunItem.claim_token) == token
                )
            )
        )
