"""Two scheduler OS processes against the real PostgreSQL and Redis: one run per cron time.

Both processes step through the same simulated minutes in lock step (each waits for the
same wall-clock instants), so they race for every due trigger. Run with::

    CONVEYOR_TEST_SERVICES=1 CONVEYOR_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \\
        scripts/test -q tests/jobs/test_scheduler_processes.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, update

from app import create_app, queue
from app.cron import fire_times
from app.models import Run, Trigger, TriggerEvent
from app.services.triggers import next_run_at
from tests.conftest import PG_URL, REDIS_URL, make_entities, make_entity_type, make_workflow

pytestmark = [
    pytest.mark.real_services,
    pytest.mark.skipif(
        os.environ.get("CONVEYOR_TEST_SERVICES") != "1" or not PG_URL,
        reason="needs CONVEYOR_TEST_SERVICES=1 and CONVEYOR_TEST_DATABASE_URL (PostgreSQL)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
# 01:40 CET on the night Europe/Paris springs forward: the span crosses the change.
SIMULATED_START = datetime(2026, 3, 29, 0, 40, tzinfo=UTC)
MINUTES = 60
STEP_SECONDS = 0.25  # wall-clock time per simulated minute
STEPS = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]
TRIGGERS = [
    {"cron": "* * * * *", "timezone": "UTC", "overlapPolicy": "allow"},
    {"cron": "* * * * *", "timezone": "Europe/Paris", "overlapPolicy": "allow"},
    {"cron": "*/2 * * * *", "timezone": "Europe/Paris", "overlapPolicy": "allow"},
    {"cron": "*/3 * * * *", "timezone": "America/New_York", "overlapPolicy": "allow"},
    {"cron": "* * * * *", "timezone": "UTC", "overlapPolicy": "skip"},
]


@pytest.fixture
def app(settings):
    """The app without its embedded sweeper, so the runs the schedulers start stay pending."""
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


class RedisTaskQueue:
    """RQ on the real Redis, on a queue of the test's own (no worker consumes it)."""

    def __init__(self, redis_url: str, name: str) -> None:
        from redis import Redis
        from rq import Queue

        self.queue = Queue(name, connection=Redis.from_url(redis_url))

    def enqueue(self, func: str, *args: Any) -> None:
        self.queue.enqueue(func, *args, result_ttl=0)

    def depth(self) -> int:
        return len(self.queue)


def scheduler_process() -> None:
    """Child process body: tick through the simulated minutes at agreed wall-clock instants."""
    database_url, redis_url, queue_name, start_ms, minutes, begin, offset_ms = sys.argv[1:8]
    from app.db import get_engine
    from jobs.scheduler import Scheduler

    simulated = [int(start_ms)]
    scheduler = Scheduler(
        get_engine(database_url),
        RedisTaskQueue(redis_url, queue_name),
        clock=lambda: simulated[0],
    )
    fired = ticks = 0
    for minute in range(int(minutes)):
        wait = float(begin) + minute * STEP_SECONDS - time.time()
        if wait > 0:
            time.sleep(wait)
        # Each process sees its own "now" a few seconds into the minute, within the grace.
        simulated[0] = int(start_ms) + minute * 60_000 + int(offset_ms)
        fired += len(scheduler.tick().runs)
        ticks += 1
    print(json.dumps({"runs": fired, "ticks": ticks}))


def test_two_scheduler_processes_start_exactly_one_run_per_scheduled_time(
    client, keys, session, settings
):
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS, status="active")
    start_ms = int(SIMULATED_START.timestamp() * 1000)
    trigger_ids = []
    for body in TRIGGERS:
        response = client.post(
            "/api/v1/triggers",
            json={"workflowId": workflow["id"], "type": "cron", **body},
            headers=keys.header("editor"),
        )
        assert response.status_code == 201, response.json
        trigger_ids.append(response.json["id"])
    # Schedule every trigger from the simulated start instead of from today.
    for trigger in session.scalars(select(Trigger).where(Trigger.id.in_(trigger_ids))).all():
        session.execute(
            update(Trigger)
            .where(Trigger.id == trigger.id)
            .values(next_run_at=next_run_at(trigger, start_ms - 1))
        )
    session.commit()

    queue_name = f"conveyor-scheduler-test-{uuid.uuid4().hex[:8]}"
    begin = time.time() + 4.0  # both processes are up and importing by then
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from tests.jobs.test_scheduler_processes import scheduler_process; "
                "scheduler_process()",
                settings.database_url,
                REDIS_URL,
                queue_name,
                str(start_ms),
                str(MINUTES),
                str(begin),
                str(offset),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for offset in (2_000, 7_000)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-4000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["ticks"] for r in reports] == [MINUTES, MINUTES]

    end = SIMULATED_START + timedelta(minutes=MINUTES - 1, seconds=7)
    total_runs = 0
    for trigger_id, body in zip(trigger_ids, TRIGGERS, strict=True):
        expected = [
            int(t.timestamp() * 1000)
            for t in fire_times(body["cron"], ZoneInfo(body["timezone"]), SIMULATED_START, end)
        ]
        events = session.scalars(
            select(TriggerEvent)
            .where(TriggerEvent.trigger_id == trigger_id)
            .order_by(TriggerEvent.scheduled_at)
        ).all()
        runs = session.scalars(select(Run).where(Run.trigger_id == trigger_id)).all()
        assert [e.scheduled_at for e in events] == expected, body
        if body["overlapPolicy"] == "allow":
            assert {e.outcome for e in events} == {"fired"}
            assert len(runs) == len(expected)
            assert sorted(e.run_id for e in events) == sorted(r.id for r in runs)
        else:  # the first run never ends (no workers): every later time is skipped
            assert [e.outcome for e in events] == ["fired"] + ["skipped"] * (len(expected) - 1)
            assert len(runs) == 1
        total_runs += len(runs)
    session.rollback()
    assert sum(r["runs"] for r in reports) == total_runs
    print("runs started per process:", [r["runs"] for r in reports])

    queue = RedisTaskQueue(REDIS_URL, queue_name)
    try:
        # Redis carried one dispatch per run, no more.
        assert queue.depth() == total_runs
    finally:
        queue.queue.delete(delete_jobs=True)
