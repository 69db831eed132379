"""The cron scheduler, driven by an injected clock: DST, overlap, catch-up, edits, races."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update
from sqlmodel import Session

from app import create_app, queue
from app.cron import next_fire_time, previous_fire_time
from app.ids import now_ms
from app.models import Entity, Run, Trigger, TriggerEvent
from app.schemas.triggers import TriggerSchema, TriggerUpdateSchema
from app.services.triggers import create_trigger, delete_trigger, update_trigger
from jobs.runtime import Runtime
from jobs.scheduler import Scheduler, run_scheduler
from tests.conftest import RecordingQueue, make_entities, make_entity_type, make_workflow

PARIS = ZoneInfo("Europe/Paris")
STEPS = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def paris(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=PARIS, fold=fold)  # type: ignore[misc]


def local(ms_value: int, zone: ZoneInfo = PARIS) -> str:
    """An instant as local ISO time with its offset, e.g. ``2026-03-29T09:00+02:00``."""
    return datetime.fromtimestamp(ms_value / 1000, zone).isoformat(timespec="minutes")


class Clock:
    """A settable clock in epoch milliseconds."""

    def __init__(self, start: datetime) -> None:
        self.now = ms(start)

    def __call__(self) -> int:
        return self.now

    def set(self, moment: datetime) -> None:
        self.now = ms(moment)


class Harness:
    """A workflow with entities, a scheduler on a simulated clock, and helpers to inspect."""

    def __init__(self, app: Any, client: Any, keys: Any, session: Session) -> None:
        entity_type = make_entity_type(client, keys)
        self.entities = make_entities(client, keys, entity_type["id"], 3)
        self.workflow = make_workflow(client, keys, entity_type["id"], STEPS, status="active")
        self.client, self.keys, self.session = client, keys, session
        self.engine = app.extensions["conveyor.engine"]
        self.clock = Clock(datetime(2026, 1, 5, tzinfo=UTC))
        self.queue = RecordingQueue()
        self.scheduler = self.new_scheduler()

    def new_scheduler(self) -> Scheduler:
        return Scheduler(self.engine, self.queue, clock=self.clock)

    def create(self, **body: Any) -> str:
        data = TriggerSchema().load({"workflowId": self.workflow["id"], "type": "cron", **body})
        row = create_trigger(
            session=self.session, workspace_id=self.keys.workspace.id, data=data, now=self.clock()
        )
        return row.id

    def update(self, trigger_id: str, **body: Any) -> Trigger:
        row = update_trigger(
            session=self.session,
            workspace_id=self.keys.workspace.id,
            trigger_id=trigger_id,
            data=TriggerUpdateSchema().load(body),
            now=self.clock(),
        )
        self.session.expunge(row)
        return row

    def run_until(self, end: datetime, step: timedelta = timedelta(minutes=15)) -> None:
        """Tick at every ``step`` from the clock's time up to ``end`` (inclusive)."""
        moment = datetime.fromtimestamp(self.clock() / 1000, UTC)
        while moment <= end:
            self.clock.set(moment)
            self.scheduler.tick()
            moment += step

    def tick_at(self, moment: datetime) -> list[TriggerEvent]:
        self.clock.set(moment)
        return self.scheduler.tick().events

    def _read(self, query: Any) -> list[Any]:
        self.session.expire_all()
        rows = list(self.session.scalars(query))
        for row in rows:
            self.session.expunge(row)
        self.session.rollback()  # SQLite takes its write lock at BEGIN: end every read
        return rows

    def events(self, trigger_id: str) -> list[TriggerEvent]:
        """The trigger's events, oldest first."""
        return self._read(
            select(TriggerEvent)
            .where(TriggerEvent.trigger_id == trigger_id)
            .order_by(TriggerEvent.id)
        )

    def fired(self, trigger_id: str) -> list[str]:
        """Local times of the trigger's fires."""
        return [local(e.scheduled_at) for e in self.events(trigger_id) if e.outcome == "fired"]

    def runs(self, trigger_id: str) -> list[Run]:
        return self._read(select(Run).where(Run.trigger_id == trigger_id).order_by(Run.id))

    def trigger(self, trigger_id: str) -> Trigger:
        return self._read(select(Trigger).where(Trigger.id == trigger_id))[0]

    def finish_runs(self, trigger_id: str) -> None:
        """Mark the trigger's runs completed, as workers would."""
        self.session.execute(
            update(Run)
            .where(Run.trigger_id == trigger_id, Run.status.in_(("pending", "running")))
            .values(status="completed", completed_at=self.clock())
        )
        self.session.commit()


@pytest.fixture
def app(settings):
    """The app without its embedded sweeper, so the runs the scheduler starts stay pending."""
    application = create_app(
        {
            "CONVEYOR": settings,
            "AUTO_MIGRATE": False,
            "TESTING": True,
            "EMBEDDED_SWEEPER": False,
            "EMBEDDED_SCHEDULER": False,
        }
    )
    yield application
    queue.shutdown_app(application)


@pytest.fixture
def harness(app, client, keys, session) -> Harness:
    return Harness(app, client, keys, session)


# --- DST -------------------------------------------------------------------------------


def test_nine_oclock_paris_fires_at_nine_local_across_spring_forward(harness):
    harness.clock.set(paris(2026, 3, 27, 10))
    trigger_id = harness.create(cron="0 9 * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 3, 31, 10))
    assert harness.fired(trigger_id) == [
        "2026-03-28T09:00+01:00",
        "2026-03-29T09:00+02:00",  # 07:00 UTC now, not 08:00
        "2026-03-30T09:00+02:00",
        "2026-03-31T09:00+02:00",
    ]
    events = harness.events(trigger_id)
    assert all(e.created_at == e.scheduled_at for e in events)  # fired on the minute
    assert len(harness.runs(trigger_id)) == 4
    assert all(e.outcome == "fired" for e in events)


def test_nine_oclock_paris_fires_at_nine_local_across_fall_back(harness):
    harness.clock.set(paris(2026, 10, 23, 10))
    trigger_id = harness.create(cron="0 9 * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 10, 27, 10))
    assert harness.fired(trigger_id) == [
        "2026-10-24T09:00+02:00",
        "2026-10-25T09:00+01:00",  # 08:00 UTC now, not 07:00
        "2026-10-26T09:00+01:00",
        "2026-10-27T09:00+01:00",
    ]


def test_time_skipped_by_spring_forward_fires_once_shifted_by_the_gap(harness):
    harness.clock.set(paris(2026, 3, 27, 12))
    trigger_id = harness.create(cron="30 2 * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 3, 31, 0))
    # 02:30 does not exist on 29 March (02:00 → 03:00): it fires once, at 03:30 CEST.
    assert harness.fired(trigger_id) == [
        "2026-03-28T02:30+01:00",
        "2026-03-29T03:30+02:00",
        "2026-03-30T02:30+02:00",
    ]


def test_time_repeated_by_fall_back_fires_once_at_its_first_occurrence(harness):
    harness.clock.set(paris(2026, 10, 23, 12))
    trigger_id = harness.create(cron="30 2 * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 10, 27, 0))
    # 02:30 happens twice on 25 October (CEST, then CET): it fires once, at the first.
    assert harness.fired(trigger_id) == [
        "2026-10-24T02:30+02:00",
        "2026-10-25T02:30+02:00",
        "2026-10-26T02:30+01:00",
    ]


def test_hourly_trigger_across_both_changes(harness):
    harness.clock.set(paris(2026, 3, 29, 0, 30))
    spring = harness.create(cron="0 * * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 3, 29, 4, 30))
    assert harness.fired(spring) == [
        "2026-03-29T01:00+01:00",
        "2026-03-29T03:00+02:00",  # one hour after 01:00: 02:00 does not exist
        "2026-03-29T04:00+02:00",
    ]
    harness.clock.set(paris(2026, 10, 25, 0, 30))
    autumn = harness.create(cron="0 * * * *", timezone="Europe/Paris", overlapPolicy="allow")
    harness.run_until(paris(2026, 10, 25, 4, 30))
    assert harness.fired(autumn) == [
        "2026-10-25T01:00+02:00",
        "2026-10-25T02:00+02:00",  # 02:00 local happens twice; it fires once
        "2026-10-25T03:00+01:00",
        "2026-10-25T04:00+01:00",
    ]


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (paris(2026, 3, 29, 1, 59), "2026-03-29T03:30+02:00"),
        (paris(2026, 3, 29, 3, 0), "2026-03-29T03:30+02:00"),
        (paris(2026, 3, 29, 3, 30), "2026-03-30T02:30+02:00"),
        (paris(2026, 10, 25, 2, 0), "2026-10-25T02:30+02:00"),
        (paris(2026, 10, 25, 2, 30), "2026-10-26T02:30+01:00"),
        (paris(2026, 10, 25, 2, 10, fold=1), "2026-10-26T02:30+01:00"),
    ],
)
def test_next_fire_time_around_dst(after, expected):
    assert local(ms(next_fire_time("30 2 * * *", PARIS, after))) == expected


def test_previous_fire_time_around_dst():
    assert local(ms(previous_fire_time("30 2 * * *", PARIS, paris(2026, 3, 29, 4)))) == (
        "2026-03-29T03:30+02:00"
    )
    second_pass = paris(2026, 10, 25, 2, 45, fold=1)
    assert local(ms(previous_fire_time("30 2 * * *", PARIS, second_pass))) == (
        "2026-10-25T02:30+02:00"
    )


def test_croniter_alone_would_fire_the_repeated_time_twice():
    """Why the local-time mapping is ours: croniter's tz-aware iteration fires 02:30 twice."""
    from croniter import croniter

    start = paris(2026, 10, 24, 12)
    raw = croniter("30 2 * * *", start)
    times = [raw.get_next(datetime) for _ in range(2)]
    assert [t.isoformat(timespec="minutes") for t in times] == [
        "2026-10-25T02:30+02:00",
        "2026-10-25T02:30+01:00",
    ]


# --- overlap ---------------------------------------------------------------------------


def test_overlap_skip_records_the_skip_with_the_blocking_run(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 59, tzinfo=UTC))
    trigger_id = harness.create(cron="* * * * *")
    harness.run_until(datetime(2026, 1, 5, 10, 2, tzinfo=UTC), step=timedelta(minutes=1))
    [first] = harness.runs(trigger_id)
    events = harness.events(trigger_id)
    assert [(e.outcome, e.reason) for e in events] == [
        ("fired", None),
        ("skipped", "overlap"),
        ("skipped", "overlap"),
    ]
    assert events[0].run_id == first.id and first.status == "pending"
    assert first.id in events[1].message
    harness.finish_runs(trigger_id)
    harness.tick_at(datetime(2026, 1, 5, 10, 3, tzinfo=UTC))
    assert len(harness.runs(trigger_id)) == 2
    assert harness.events(trigger_id)[-1].outcome == "fired"
    assert harness.queue.tasks == [
        ("jobs.dispatch.dispatch_run", (r.id,)) for r in harness.runs(trigger_id)
    ]


def test_overlap_queue_starts_the_buffered_fire_when_the_run_ends(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 59, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="* * * * *", overlapPolicy="queue")
    harness.run_until(datetime(2026, 1, 5, 10, 2, 30, tzinfo=UTC), step=timedelta(seconds=30))
    events = harness.events(trigger_id)
    assert [(local(e.scheduled_at, UTC)[11:], e.outcome, e.reason) for e in events] == [
        ("10:00+00:00", "fired", None),
        ("10:01+00:00", "queued", None),
        ("10:02+00:00", "skipped", "overlap"),  # queue buffers one fire
    ]
    assert "already queued" in events[2].message
    assert len(harness.runs(trigger_id)) == 1

    harness.finish_runs(trigger_id)
    harness.tick_at(datetime(2026, 1, 5, 10, 2, 40, tzinfo=UTC))
    runs = harness.runs(trigger_id)
    assert len(runs) == 2
    queued = harness.events(trigger_id)[1]
    assert (queued.outcome, queued.run_id) == ("fired", runs[1].id)
    assert queued.message.endswith("Started when it ended.")

    harness.tick_at(datetime(2026, 1, 5, 10, 3, tzinfo=UTC))
    assert harness.events(trigger_id)[-1].outcome == "queued"  # behind the second run
    harness.tick_at(datetime(2026, 1, 5, 10, 3, 10, tzinfo=UTC))
    assert len(harness.runs(trigger_id)) == 2  # still waiting


def test_overlap_allow_starts_a_run_every_time(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 59, tzinfo=UTC))
    trigger_id = harness.create(cron="* * * * *", overlapPolicy="allow")
    harness.run_until(datetime(2026, 1, 5, 10, 4, tzinfo=UTC), step=timedelta(minutes=1))
    runs = harness.runs(trigger_id)
    assert len(runs) == 5 and {r.status for r in runs} == {"pending"}
    assert {r.trigger_type for r in runs} == {"cron"}


# --- catch-up --------------------------------------------------------------------------


def test_catch_up_none_records_one_skip_for_the_missed_times(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *")
    # The scheduler is down from 09:30 until 13:20: 10:00, 11:00, 12:00 and 13:00 pass.
    events = harness.tick_at(datetime(2026, 1, 5, 13, 20, tzinfo=UTC))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "missed")]
    assert events[0].scheduled_at == ms(datetime(2026, 1, 5, 10, tzinfo=UTC))
    assert "Missed 4 scheduled time(s)" in events[0].message
    assert "2026-01-05T10:00+00:00 to 2026-01-05T13:00+00:00" in events[0].message
    assert harness.runs(trigger_id) == []
    assert harness.trigger(trigger_id).next_run_at == ms(datetime(2026, 1, 5, 14, tzinfo=UTC))
    harness.run_until(datetime(2026, 1, 5, 14, tzinfo=UTC), step=timedelta(minutes=10))
    assert harness.fired(trigger_id) == ["2026-01-05T15:00+01:00"]


def test_catch_up_none_still_fires_a_time_reached_within_the_grace(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    harness.create(cron="0 * * * *")
    events = harness.tick_at(datetime(2026, 1, 5, 13, 0, 30, tzinfo=UTC))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "missed"), ("fired", None)]
    assert "Missed 3 scheduled time(s)" in events[0].message
    assert events[1].scheduled_at == ms(datetime(2026, 1, 5, 13, tzinfo=UTC))


def test_catch_up_last_fires_once_for_the_most_recent_missed_time(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *", catchUp="last")
    events = harness.tick_at(datetime(2026, 1, 5, 13, 20, tzinfo=UTC))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "missed"), ("fired", None)]
    assert "Missed 3 scheduled time(s)" in events[0].message
    assert events[1].scheduled_at == ms(datetime(2026, 1, 5, 13, tzinfo=UTC))
    assert len(harness.runs(trigger_id)) == 1
    assert harness.tick_at(datetime(2026, 1, 5, 13, 25, tzinfo=UTC)) == []
    trigger = harness.trigger(trigger_id)
    assert trigger.next_run_at == ms(datetime(2026, 1, 5, 14, tzinfo=UTC))
    assert trigger.last_run_at == ms(datetime(2026, 1, 5, 13, 20, tzinfo=UTC))


def test_catch_up_last_after_one_missed_time_just_fires_it(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *", catchUp="last")
    events = harness.tick_at(datetime(2026, 1, 5, 10, 40, tzinfo=UTC))
    assert [(e.outcome, e.scheduled_at) for e in events] == [
        ("fired", ms(datetime(2026, 1, 5, 10, tzinfo=UTC)))
    ]
    assert len(harness.runs(trigger_id)) == 1


# --- disabled, edited, deleted, inactive workflows, selectors ----------------------------


def test_disabled_trigger_does_not_fire_and_resumes_without_catch_up(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *", catchUp="last")
    assert harness.update(trigger_id, enabled=False).next_run_at is None
    harness.run_until(datetime(2026, 1, 5, 12, 30, tzinfo=UTC))
    assert harness.events(trigger_id) == []
    enabled = harness.update(trigger_id, enabled=True)
    assert enabled.next_run_at == ms(datetime(2026, 1, 5, 13, tzinfo=UTC))
    harness.run_until(datetime(2026, 1, 5, 13, tzinfo=UTC))
    assert harness.fired(trigger_id) == ["2026-01-05T14:00+01:00"]
    assert len(harness.events(trigger_id)) == 1


def test_created_disabled_trigger_never_fires(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="* * * * *", enabled=False)
    harness.run_until(datetime(2026, 1, 5, 10, 30, tzinfo=UTC), step=timedelta(minutes=1))
    assert harness.events(trigger_id) == [] and harness.runs(trigger_id) == []


def test_edited_cron_and_timezone_take_effect_at_once(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *", overlapPolicy="allow")
    harness.run_until(datetime(2026, 1, 5, 10, 10, tzinfo=UTC), step=timedelta(minutes=5))
    edited = harness.update(trigger_id, cron="30 * * * *")
    assert edited.next_run_at == ms(datetime(2026, 1, 5, 10, 30, tzinfo=UTC))
    harness.run_until(datetime(2026, 1, 5, 11, 10, tzinfo=UTC), step=timedelta(minutes=5))
    assert [
        local(ms_, UTC)[11:16] for ms_ in [e.scheduled_at for e in harness.events(trigger_id)]
    ] == [
        "10:00",
        "10:30",
    ]
    harness.clock.set(datetime(2026, 1, 5, 11, 30, tzinfo=UTC))
    moved = harness.update(trigger_id, cron="0 12 * * *", timezone="Asia/Tokyo")
    assert local(moved.next_run_at, ZoneInfo("Asia/Tokyo")) == "2026-01-06T12:00+09:00"
    harness.run_until(datetime(2026, 1, 6, 3, 30, tzinfo=UTC), step=timedelta(minutes=30))
    assert harness.fired(trigger_id)[-1] == "2026-01-06T04:00+01:00"  # 12:00 in Tokyo
    assert len(harness.events(trigger_id)) == 3


def test_deleted_trigger_is_not_fired(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *")
    delete_trigger(
        session=harness.session, workspace_id=harness.keys.workspace.id, trigger_id=trigger_id
    )
    assert harness.tick_at(datetime(2026, 1, 5, 10, tzinfo=UTC)) == []
    assert harness.runs(trigger_id) == []


@pytest.mark.parametrize("status", ["draft", "archived"])
def test_inactive_workflow_records_a_skip_and_starts_nothing(harness, status):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *")
    response = harness.client.patch(
        f"/api/v1/workflows/{harness.workflow['id']}",
        json={"status": status},
        headers=harness.keys.header(),
    )
    assert response.status_code == 200
    events = harness.tick_at(datetime(2026, 1, 5, 10, tzinfo=UTC))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "workflow_not_active")]
    assert status in events[0].message
    assert harness.runs(trigger_id) == []
    assert harness.trigger(trigger_id).next_run_at == ms(datetime(2026, 1, 5, 11, tzinfo=UTC))


def test_selector_status_and_empty_selection(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *", selector={"status": "ready"})
    events = harness.tick_at(datetime(2026, 1, 5, 10, tzinfo=UTC))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "empty_selection")]
    assert harness.runs(trigger_id) == [] and harness.trigger(trigger_id).last_run_at is None
    ready = harness.entities[1]["id"]
    harness.session.execute(update(Entity).where(Entity.id == ready).values(status="ready"))
    harness.session.commit()
    harness.tick_at(datetime(2026, 1, 5, 11, tzinfo=UTC))
    [run] = harness.runs(trigger_id)
    assert run.total == 1
    selection = harness.client.get(
        f"/api/v1/workflows/{harness.workflow['id']}/runs/{run.id}", headers=harness.keys.header()
    ).json
    assert selection["progress"]["total"] == 1


def test_selector_updated_since_last_run(harness):
    start = datetime.fromtimestamp(now_ms() / 1000, UTC).replace(minute=0, second=0, microsecond=0)
    start += timedelta(hours=2)  # after the entities were written
    harness.clock.set(start - timedelta(minutes=30))
    trigger_id = harness.create(cron="0 * * * *", selector={"updatedSince": "lastRun"})
    harness.tick_at(start)
    assert [r.total for r in harness.runs(trigger_id)] == [3]  # first fire: everything
    assert harness.trigger(trigger_id).last_run_at == ms(start)
    changed = harness.entities[2]["id"]
    harness.session.execute(
        update(Entity).where(Entity.id == changed).values(updated_at=ms(start) + 600_000)
    )
    harness.session.commit()
    harness.finish_runs(trigger_id)
    harness.tick_at(start + timedelta(hours=1))
    runs = harness.runs(trigger_id)
    assert [r.total for r in runs] == [3, 1]
    harness.finish_runs(trigger_id)
    events = harness.tick_at(start + timedelta(hours=2))
    assert [(e.outcome, e.reason) for e in events] == [("skipped", "empty_selection")]
    assert harness.trigger(trigger_id).last_run_at == ms(start + timedelta(hours=1))


# --- exactly once ------------------------------------------------------------------------


def test_a_time_another_scheduler_recorded_starts_no_second_run(harness):
    harness.clock.set(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
    trigger_id = harness.create(cron="0 * * * *")
    due = ms(datetime(2026, 1, 5, 10, tzinfo=UTC))
    # As if another scheduler had inserted the event and not yet moved next_run_at on.
    harness.session.add(
        TriggerEvent(id="tev_other", trigger_id=trigger_id, scheduled_at=due, outcome="fired")
    )
    harness.session.commit()
    assert harness.tick_at(datetime(2026, 1, 5, 10, tzinfo=UTC)) == []
    assert harness.runs(trigger_id) == []
    assert [e.id for e in harness.events(trigger_id)] == ["tev_other"]


def test_concurrent_schedulers_start_exactly_one_run_per_time(harness):
    """Three schedulers (threads, own sessions) tick the same simulated minutes at once."""
    harness.clock.set(datetime(2026, 1, 5, 9, 59, 30, tzinfo=UTC))
    trigger_ids = [harness.create(cron="* * * * *", overlapPolicy="allow") for _ in range(3)]
    minutes = [datetime(2026, 1, 5, 10, m, tzinfo=UTC) for m in range(15)]
    barrier = threading.Barrier(4)  # three schedulers and this thread, which moves the clock
    errors: list[BaseException] = []

    def scheduler_thread() -> None:
        scheduler = harness.new_scheduler()
        try:
            for _ in minutes:
                barrier.wait(timeout=60)  # the clock is set
                scheduler.tick()
                barrier.wait(timeout=60)  # everyone has ticked
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=scheduler_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for minute in minutes:
        harness.clock.set(minute)
        barrier.wait(timeout=60)
        barrier.wait(timeout=60)
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for trigger_id in trigger_ids:
        events = harness.events(trigger_id)
        assert [e.scheduled_at for e in events] == [ms(m) for m in minutes]
        assert {e.outcome for e in events} == {"fired"}
        runs = harness.runs(trigger_id)
        assert len(runs) == len(minutes)
        assert sorted(e.run_id for e in events) == sorted(r.id for r in runs)


# --- the loop ----------------------------------------------------------------------------


def test_run_scheduler_loop_fires_and_stops(app, harness):
    trigger_id = harness.create(cron="* * * * *")
    harness.session.execute(
        update(Trigger).where(Trigger.id == trigger_id).values(next_run_at=now_ms() - 1_000)
    )
    harness.session.commit()
    runtime = Runtime(app.config["CONVEYOR"], harness.engine, harness.queue)
    stop = threading.Event()
    thread = threading.Thread(target=run_scheduler, args=(runtime, stop, 0.05))
    thread.start()
    try:
        deadline = now_ms() + 20_000
        while now_ms() < deadline and not harness.runs(trigger_id):
            stop.wait(0.05)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(harness.runs(trigger_id)) == 1
    assert harness.trigger(trigger_id).next_run_at > now_ms() - 60_000
