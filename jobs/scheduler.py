"""The scheduler: finds due cron triggers in the database and starts their runs.

Schedules live in the database (``triggers.next_run_at``), so a trigger created, edited,
disabled or deleted through the API is picked up at the next tick. Any number of
schedulers may run: each due trigger is handled in one transaction that locks its row
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite serialises writers), inserts the
event for the scheduled time, creates the run, and moves ``next_run_at`` on only if it
still holds the value read. The unique index on ``trigger_events (trigger_id,
scheduled_at)`` is the guarantee behind it all: a second transaction for the same
(trigger, scheduled time) fails and rolls back, so each time starts at most one run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from app import cron
from app.ids import now_ms
from app.models import Run, Trigger, TriggerEvent, Workflow
from app.services import triggers as service
from app.statuses import Outcome, SkipReason

if TYPE_CHECKING:
    from app.queue import Runtime, TaskQueue

log = logging.getLogger(__name__)

# A cron time is "on time" while the scheduler reaches it within this margin; older due
# times count as missed (scheduler down) and follow the trigger's catchUp policy.
MISFIRE_GRACE_MS = 60_000
BATCH_SIZE = 200
MISSED_COUNT_CAP = 10_000


@dataclass
class TickReport:
    """What one tick did: the events it recorded (and committed)."""

    events: list[TriggerEvent] = field(default_factory=list)
    more_due: bool = False  # a full batch was due: tick again at once

    @property
    def runs(self) -> list[str]:
        """Ids of the runs started."""
        return [e.run_id for e in self.events if e.outcome == Outcome.FIRED and e.run_id]


class Scheduler:
    """Fires due cron triggers; ``clock`` (epoch ms) is injectable so tests need no sleeping."""

    def __init__(
        self,
        engine: Engine,
        queue: TaskQueue,
        *,
        clock: Callable[[], int] = now_ms,
        misfire_grace_ms: int = MISFIRE_GRACE_MS,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.engine = engine
        self.queue = queue
        self.clock = clock
        self.misfire_grace_ms = misfire_grace_ms
        self.batch_size = batch_size

    def session(self) -> Session:
        """A new session on the scheduler's database."""
        return Session(self.engine, expire_on_commit=False)

    # --- the loop ----------------------------------------------------------------------

    def tick(self) -> TickReport:
        """Start queued fires whose blocking run ended, then fire every due trigger once."""
        report = TickReport()
        now = self.clock()
        for trigger_id in self._triggers_with_queued_fires():
            self._guarded(report, self._start_queued, trigger_id, now)
        due = self._due_trigger_ids(now)
        for trigger_id in due:
            self._guarded(report, self._fire_due, trigger_id, now)
        report.more_due = len(due) >= self.batch_size
        return report

    def run_forever(
        self, interval_seconds: float = 5.0, stop_event: threading.Event | None = None
    ) -> None:
        """Tick until ``stop_event`` is set, sleeping until the next due time (at most interval)."""
        stop = stop_event or threading.Event()
        log.info("scheduler started (interval %ss)", interval_seconds)
        while not stop.is_set():
            try:
                report = self.tick()
                for event in report.events:
                    log.info(
                        "trigger %s %s for %s%s",
                        event.trigger_id,
                        event.outcome,
                        event.scheduled_at,
                        f": run {event.run_id}" if event.run_id else f" ({event.reason})",
                    )
                wait = 0.0 if report.more_due else self._seconds_until_due(interval_seconds)
            except Exception:  # the database may be down: keep the loop alive and retry
                log.exception("scheduler tick failed")
                wait = interval_seconds
            stop.wait(wait)
        log.info("scheduler stopped")

    def _seconds_until_due(self, interval_seconds: float) -> float:
        """Seconds until the next future fire, capped by the polling interval.

        Triggers still overdue after a tick (one whose firing failed, or one another
        scheduler holds) are retried at the next interval, not in a busy loop.
        """
        now = self.clock()
        with self.session() as session:
            earliest = session.scalar(
                select(func.min(col(Trigger.next_run_at))).where(
                    col(Trigger.type) == "cron",
                    col(Trigger.enabled).is_(True),
                    col(Trigger.next_run_at) > now,
                )
            )
        if earliest is None:
            return interval_seconds
        return max(0.0, min(interval_seconds, (earliest - now) / 1000))

    def _guarded(
        self,
        report: TickReport,
        step: Callable[[Session, str, int], list[TriggerEvent]],
        trigger_id: str,
        now: int,
    ) -> None:
        """Run one trigger's transaction; a lost race or a failure touches only that trigger."""
        with self.session() as session:
            try:
                report.events.extend(step(session, trigger_id, now))
            except IntegrityError:
                # Another scheduler recorded this (trigger, scheduled time) first.
                session.rollback()
                log.info("trigger %s: another scheduler handled this time", trigger_id)
            except OperationalError:
                session.rollback()
                raise
            except Exception:
                session.rollback()
                log.exception("trigger %s: firing failed; will retry next tick", trigger_id)

    # --- due cron times ----------------------------------------------------------------

    def _due_trigger_ids(self, now: int) -> list[str]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(col(Trigger.id))
                    .where(
                        col(Trigger.type) == "cron",
                        col(Trigger.enabled).is_(True),
                        col(Trigger.next_run_at) <= now,
                    )
                    .order_by(col(Trigger.next_run_at))
                    .limit(self.batch_size)
                )
            )

    def _fire_due(self, session: Session, trigger_id: str, now: int) -> list[TriggerEvent]:
        """Handle one due trigger: record missed times, fire (or skip) the current one."""
        trigger = _lock(session, trigger_id)
        if (
            trigger is None
            or trigger.type != "cron"
            or not trigger.enabled
            or trigger.cron is None
            or trigger.next_run_at is None
            or trigger.next_run_at > now
        ):
            session.rollback()  # gone, edited, or taken by another scheduler meanwhile
            return []
        due = trigger.next_run_at
        zone = ZoneInfo(trigger.timezone)
        latest_dt = cron.previous_fire_time(trigger.cron, zone, cron.from_ms(now))
        latest = max(due, cron.to_ms(latest_dt)) if latest_dt else due
        fire_at: int | None = latest if now - latest <= self.misfire_grace_ms else None
        if fire_at is None and trigger.catch_up == "last":
            fire_at = latest
        events: list[TriggerEvent] = []
        missed_end = latest if fire_at is None else latest - 1
        if due <= missed_end:
            events.append(self._record_missed(session, trigger, zone, due, missed_end, now))
        run: Run | None = None
        if fire_at is not None:
            event, run = self._fire(session, trigger, fire_at, now)
            events.append(event)
        following = cron.next_fire_time(trigger.cron, zone, cron.from_ms(max(now, latest)))
        moved = session.execute(
            update(Trigger)
            .where(col(Trigger.id) == trigger.id, col(Trigger.next_run_at) == due)
            .values(next_run_at=cron.to_ms(following))
        )
        if moved.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()  # the schedule changed under us; the next tick looks again
            return []
        session.commit()  # a started run's dispatch leaves with this commit
        return events

    def _record_missed(
        self, session: Session, trigger: Trigger, zone: ZoneInfo, first: int, last: int, now: int
    ) -> TriggerEvent:
        """One skipped event summarising the times missed while no scheduler ran."""
        assert trigger.cron is not None
        times = cron.fire_times(trigger.cron, zone, cron.from_ms(first), cron.from_ms(last))
        count = 0
        last_missed = first
        for moment in times:
            count += 1
            last_missed = cron.to_ms(moment)
            if count >= MISSED_COUNT_CAP:
                break
        counted = f"{count:,}" + ("+" if count >= MISSED_COUNT_CAP else "")
        span = (
            _iso(first, zone) if count <= 1 else f"{_iso(first, zone)} to {_iso(last_missed, zone)}"
        )
        policy = "catchUp is none" if trigger.catch_up == "none" else "catchUp fires only the last"
        return service.record_event(
            session,
            trigger_id=trigger.id,
            outcome=Outcome.SKIPPED,
            scheduled_at=first,
            reason=SkipReason.MISSED,
            message=f"Missed {counted} scheduled time(s) ({span}) while no scheduler ran; "
            f"{policy}.",
            created_at=now,
        )

    def _fire(
        self, session: Session, trigger: Trigger, scheduled_at: int, now: int
    ) -> tuple[TriggerEvent, Run | None]:
        """Record the event for ``scheduled_at`` first, then start the run (or say why not)."""
        event = service.record_event(
            session,
            trigger_id=trigger.id,
            outcome=Outcome.FIRED,
            scheduled_at=scheduled_at,
            created_at=now,
        )
        workflow = session.get(Workflow, trigger.workflow_id)
        refusal = service.inactive_reason(trigger, workflow)
        if refusal is not None:
            return _skip(session, event, *refusal), None
        assert workflow is not None
        if trigger.overlap_policy != "allow":
            blocking = service.active_run(session, trigger)
            queued = (
                _queued_event(session, trigger.id) if trigger.overlap_policy == "queue" else None
            )
            if queued is not None:
                return _skip(
                    session,
                    event,
                    SkipReason.OVERLAP,
                    f"A fire (scheduled {_iso(queued.scheduled_at, trigger.timezone)}) is already "
                    "queued behind the previous run; overlapPolicy queue buffers one.",
                ), None
            if blocking is not None and trigger.overlap_policy == "skip":
                return _skip(
                    session,
                    event,
                    SkipReason.OVERLAP,
                    f"The previous run {blocking.id} is still {blocking.status}.",
                ), None
            if blocking is not None:
                event.outcome = Outcome.QUEUED.value
                event.message = f"Queued until the previous run {blocking.id} ends."
                session.add(event)
                session.flush()
                return event, None
        return self._start(session, trigger, workflow, event, now)

    def _start(
        self,
        session: Session,
        trigger: Trigger,
        workflow: Workflow,
        event: TriggerEvent,
        now: int,
    ) -> tuple[TriggerEvent, Run | None]:
        """Evaluate the selector now and start the run (an empty selection starts none)."""
        entity_ids = service.selected_entity_ids(session, trigger, workflow)
        if not entity_ids:
            return _skip(
                session, event, SkipReason.EMPTY_SELECTION, "No entity matched the selector."
            ), None
        run = service.start_trigger_run(
            session,
            queue=self.queue,
            trigger=trigger,
            workflow=workflow,
            entity_ids=entity_ids,
            now=now,
        )
        event.outcome = Outcome.FIRED.value
        event.run_id = run.id
        session.add(event)
        session.flush()
        return event, run

    # --- queued fires (overlapPolicy: queue) ---------------------------------------------

    def _triggers_with_queued_fires(self) -> list[str]:
        with self.session() as session:
            return list(
                session.scalars(
                    select(col(TriggerEvent.trigger_id))
                    .where(col(TriggerEvent.outcome) == Outcome.QUEUED.value)
                    .distinct()
                    .limit(self.batch_size)
                )
            )

    def _start_queued(self, session: Session, trigger_id: str, now: int) -> list[TriggerEvent]:
        """Start the trigger's queued fire once its previous run has ended."""
        trigger = _lock(session, trigger_id)
        if trigger is None:
            session.rollback()
            return []
        event = _queued_event(session, trigger_id)
        if event is None or service.active_run(session, trigger) is not None:
            session.rollback()
            return []
        # Compare-and-set on the outcome first: only one scheduler moves a queued fire on.
        claimed = session.execute(
            update(TriggerEvent)
            .where(
                col(TriggerEvent.id) == event.id, col(TriggerEvent.outcome) == Outcome.QUEUED.value
            )
            .values(outcome=Outcome.FIRED.value)
            .execution_options(synchronize_session=False)
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return []
        workflow = session.get(Workflow, trigger.workflow_id)
        refusal = service.inactive_reason(trigger, workflow)
        run: Run | None = None
        if refusal is not None:
            _skip(session, event, *refusal)
        else:
            assert workflow is not None
            waited = event.message
            event, run = self._start(session, trigger, workflow, event, now)
            if run is not None:
                event.message = f"{waited} Started when it ended."
                session.add(event)
                session.flush()
        session.commit()  # a started run's dispatch leaves with this commit
        return [event]


def _lock(session: Session, trigger_id: str) -> Trigger | None:
    """The trigger row, locked; ``None`` when deleted or held by another scheduler."""
    return session.scalars(
        select(Trigger)
        .where(col(Trigger.id) == trigger_id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    ).first()


def _queued_event(session: Session, trigger_id: str) -> TriggerEvent | None:
    """The trigger's queued fire, if one waits (there is at most one)."""
    return session.scalars(
        select(TriggerEvent)
        .where(
            col(TriggerEvent.trigger_id) == trigger_id,
            col(TriggerEvent.outcome) == Outcome.QUEUED.value,
        )
        .order_by(col(TriggerEvent.id))
        .limit(1)
        .execution_options(populate_existing=True)
    ).first()


def _skip(session: Session, event: TriggerEvent, reason: SkipReason, message: str) -> TriggerEvent:
    """Turn ``event`` into a skip with its reason."""
    event.outcome = Outcome.SKIPPED.value
    event.reason = reason.value
    event.message = message
    event.run_id = None
    session.add(event)
    session.flush()
    return event


def _iso(ms: int | None, zone: ZoneInfo | str) -> str:
    """A scheduled time as local ISO 8601 for messages."""
    if ms is None:
        return "?"
    tz = zone if isinstance(zone, ZoneInfo) else ZoneInfo(zone)
    return datetime.fromtimestamp(ms / 1000, tz).isoformat(timespec="minutes")


def run_scheduler(
    runtime: Runtime, stop_event: threading.Event, interval_seconds: float = 5.0
) -> None:
    """The ``conveyor scheduler`` process (and the embedded default's scheduler thread)."""
    Scheduler(runtime.engine, runtime.queue).run_forever(interval_seconds, stop_event)


def start_scheduler_thread(rt: Runtime) -> threading.Event:
    """The embedded default runs the cron scheduler in-process, like its worker threads."""
    from app.queue import install

    stop = threading.Event()

    def loop() -> None:
        install(rt, thread_only=True)
        run_scheduler(rt, stop, interval_seconds=5)

    threading.Thread(target=loop, name="conveyor-scheduler", daemon=True).start()
    return stop
