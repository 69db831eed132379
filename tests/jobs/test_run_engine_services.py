"""The run engine against the real PostgreSQL and Redis, with `conveyor worker` processes.

Skipped unless ``CONVEYOR_TEST_SERVICES=1`` and ``CONVEYOR_TEST_DATABASE_URL`` are set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app.config import Settings
from app.models import Entity, Run, RunItem
from jobs.queue import RQQueue
from tests.conftest import PG_URL, REDIS_URL, make_entities, make_entity_type, make_workflow
from tests.peers import TcpProxy, WebhookReceiver

pytestmark = [
    pytest.mark.services,
    pytest.mark.skipif(
        not (os.environ.get("CONVEYOR_TEST_SERVICES") == "1" and PG_URL),
        reason="needs CONVEYOR_TEST_SERVICES=1 and CONVEYOR_TEST_DATABASE_URL (PostgreSQL)",
    ),
]

STEPS = [
    {"id": "shape", "type": "transform", "config": {"set": {"n": "{{ entity.data.price * 2 }}"}}},
    {
        "id": "check",
        "type": "validate",
        "config": {"rules": [{"field": "title", "required": True}]},
    },
    {
        "id": "odd",
        "type": "condition",
        "config": {"if": "entity.data.price % 7 == 3", "then": "fail"},
    },
    {"id": "pub", "type": "publish", "config": {}},
]


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The conftest app (behind ``keys`` and ``session``) without its embedded sweeper, whose
    worker threads would otherwise pick up stalled runs: here only the worker processes
    under test may recover a run."""
    from app import create_app
    from jobs import queue as queue_module

    application = create_app(
        {
            "CONVEYOR": settings,
            "AUTO_MIGRATE": False,
            "TESTING": True,
            "EMBEDDED_SCHEDULER": False,
            "EMBEDDED_SWEEPER": False,
        }
    )
    yield application
    queue_module.shutdown_app(application)


@pytest.fixture
def redis() -> Iterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def services_settings(settings: Settings) -> Settings:
    return Settings(
        database_url=settings.database_url,
        redis_url=REDIS_URL,
        secret_keys=settings.secret_keys,
        chunk_size=50,
        lease_seconds=3,
        sweep_interval_seconds=1,
    )


@pytest.fixture
def workers(services_settings: Settings) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `conveyor worker` processes on demand; kill them all at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": services_settings.database_url,
        "REDIS_URL": REDIS_URL,
        "CONVEYOR_CHUNK_SIZE": "50",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_SWEEP_SECONDS": "1",
        "CONVEYOR_OUTBOUND_ALLOW_HOSTS": "127.0.0.1",  # the tests' webhook receivers
    }

    def start(count: int, database_url: str | None = None) -> list[subprocess.Popen[bytes]]:
        for _ in range(count):
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker"],
                    env={**env, "DATABASE_URL": database_url or env["DATABASE_URL"]},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return started

    yield start  # type: ignore[misc]
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def _start(
    client, keys, count: int, receiver: WebhookReceiver | None = None
) -> tuple[dict, list[str]]:
    """``count`` entities and a workflow over them; with a ``receiver``, its publish step
    delivers there (a slow receiver keeps the run going long enough to interrupt)."""
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], count)]
    steps = STEPS
    if receiver is not None:
        publish = {"id": "pub", "type": "publish", "config": {"target": {"url": receiver.url}}}
        steps = [*STEPS[:-1], publish]
    workflow = make_workflow(client, keys, entity_type["id"], steps, settings={"concurrency": 200})
    return workflow, ids


def _run_over(client, keys, workflow, ids) -> str:
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/run", json={"entityIds": ids}, headers=keys.header()
    )
    assert response.status_code == 202, response.json
    return response.json["runId"]


def _wait(session: Session, run_id: str, timeout: float = 120) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.expire_all()
        run = session.get(Run, run_id)
        session.rollback()
        if run and run.status in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.2)
    pytest.fail(f"run {run_id} did not finish")


def _wait_for_progress(session: Session, run_id: str, done: int, timeout: float = 60) -> None:
    """Wait until at least ``done`` entities of the run are final (some work done, some left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.expire_all()
        run = session.get(Run, run_id)
        session.rollback()
        if run and run.completed + run.failed >= done:
            return
        time.sleep(0.01)
    pytest.fail(f"run {run_id} did not reach {done} finished entities")


def _assert_exact(session: Session, run: Run, count: int) -> None:
    assert run.total == count
    assert run.completed + run.failed + run.cancelled == run.total
    statuses = dict(
        session.execute(
            select(RunItem.status, func.count())
            .where(RunItem.run_id == run.id)
            .group_by(RunItem.status)
        ).all()
    )
    assert statuses.get("completed", 0) == run.completed
    assert statuses.get("failed", 0) == run.failed
    assert statuses.get("cancelled", 0) == run.cancelled


@pytest.fixture
def app_on_services(services_settings, redis):
    from app import create_app
    from jobs import queue as queue_module

    application = create_app(
        {"CONVEYOR": services_settings, "AUTO_MIGRATE": False, "TESTING": True}
    )
    assert isinstance(queue_module.get_queue(application), RQQueue)
    yield application


def test_four_workers_two_runs_exact_counts(app_on_services, keys, session, workers):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000)
    run_a = _run_over(client, keys, workflow, ids)
    run_b = _run_over(client, keys, workflow, ids[:600])
    workers(4)
    for run_id, count in ((run_a, 1000), (run_b, 600)):
        run = _wait(session, run_id)
        _assert_exact(session, run, count)
        expected_failed = sum(1 for i in range(count) if i % 7 == 3)
        assert run.failed == expected_failed
        assert run.status == "failed"  # tolerated failure percentage is 0


def test_kill_9_mid_run_publishes_each_entity_once(app_on_services, keys, session, workers):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000)
    run_id = _run_over(client, keys, workflow, ids)
    victim, *_ = workers(2)
    _wait_for_progress(session, run_id, 100)
    os.kill(victim.pid, signal.SIGKILL)
    run = _wait(session, run_id)
    _assert_exact(session, run, 1000)
    assert run.cancelled == 0
    _assert_published_once(session, run, ids)


def test_redis_flushall_mid_run_still_completes(app_on_services, keys, session, workers, redis):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000)
    run_id = _run_over(client, keys, workflow, ids)
    workers(2)
    _wait_for_progress(session, run_id, 100)
    redis.flushall()
    run = _wait(session, run_id)
    _assert_exact(session, run, 1000)
    assert run.cancelled == 0


@pytest.fixture
def slow_receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver slow enough that a run is still going when a test cancels it."""
    with WebhookReceiver() as receiver:
        receiver.delay = 0.005
        yield receiver


def test_cancel_mid_run_and_retry(app_on_services, keys, session, workers, slow_receiver):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000, slow_receiver)
    run_id = _run_over(client, keys, workflow, ids)
    workers(1)
    _wait_for_progress(session, run_id, 50)
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/runs/{run_id}/cancel", headers=keys.header("executor")
    )
    assert response.status_code == 200, response.json
    run = _wait(session, run_id)
    assert run.status == "cancelled" and run.cancelled > 0
    _assert_exact(session, run, 1000)
    # Cancelled entities were never published; the rest were, once each.
    assert len(slow_receiver.deliveries) == slow_receiver.unique_ids == run.completed
    retry = client.post(
        f"/api/v1/workflows/{workflow['id']}/runs/{run_id}/retry", headers=keys.header("executor")
    )
    assert retry.status_code == 202, retry.json
    second = _wait(session, retry.json["runId"])
    assert second.retry_of == run_id
    assert second.total == run.failed + run.cancelled
    _assert_exact(session, second, second.total)


def _assert_published_once(session: Session, run: Run, ids: list[str]) -> None:
    """Every entity that passed was written exactly once: one version bump, never two."""
    entities = session.scalars(select(Entity).where(Entity.id.in_(ids))).all()
    passed = [e for e in entities if e.status == "published"]
    assert len(passed) == run.completed
    assert {e.version for e in passed} == {2}
    assert all(e.published_version == 2 for e in passed)


# The issue asks for a minute; set it lower to iterate faster on this test.
OUTAGE_SECONDS = float(os.environ.get("CONVEYOR_TEST_DATABASE_OUTAGE_SECONDS", "60"))


def test_database_unavailable_for_a_minute_mid_run(
    app_on_services, keys, session, workers, services_settings, slow_receiver
):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000, slow_receiver)
    url = make_url(services_settings.database_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        workers(2, through_proxy.render_as_string(hide_password=False))
        run_id = _run_over(client, keys, workflow, ids)
        _wait_for_progress(session, run_id, 100)
        proxy.cut()  # the workers lose the database: every query and connect fails
        time.sleep(OUTAGE_SECONDS)
        session.expire_all()
        during = session.get(Run, run_id)
        session.rollback()
        assert during.status == "running"
        assert during.completed + during.failed < 1000
        proxy.restore()
        run = _wait(session, run_id, timeout=120)
    _assert_exact(session, run, 1000)
    assert run.cancelled == 0
    assert run.failed == sum(1 for i in range(1000) if i % 7 == 3)
    _assert_published_once(session, run, ids)
    # Delivered to the receiver for every completed entity; a delivery repeated after the
    # outage carries the same webhook-id, so the receiver counts it once.
    assert slow_receiver.unique_ids == run.completed
