"""The run engine against the real PostgreSQL and Redis, with `conveyor worker` processes.

Skipped unless ``CONVEYOR_TEST_SERVICES=1`` and ``CONVEYOR_TEST_DATABASE_URL`` are set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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
from app.queue import RQQueue
from tests.conftest import PG_URL, make_entities, make_entity_type, make_workflow
from tests.peers import OpenAIPeer, RedisServer, TcpProxy, WebhookReceiver

pytestmark = [
    pytest.mark.real_services,
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
    from app import queue as queue_module

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
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, which it may flush, kill and restart."""
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return Redis.from_url(redis_server.url)


@pytest.fixture
def services_settings(settings: Settings, redis_server: RedisServer) -> Settings:
    return Settings(
        database_url=settings.database_url,
        redis_url=redis_server.url,
        secret_keys=settings.secret_keys,
        chunk_size=50,
        lease_seconds=3,
        sweep_interval_seconds=1,
    )


@pytest.fixture
def workers(services_settings: Settings, tmp_path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `conveyor worker` processes on demand (their logs in ``tmp_path``); kill them
    all at the end."""
    started: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": services_settings.database_url,
        "REDIS_URL": services_settings.redis_url or "",
        "CONVEYOR_SECRET_KEY": ",".join(services_settings.secret_keys),
        "CONVEYOR_CHUNK_SIZE": "50",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_SWEEP_SECONDS": "1",
        "CONVEYOR_OUTBOUND_ALLOW_HOSTS": "127.0.0.1",  # the tests' webhook receivers
    }

    def start(
        count: int, database_url: str | None = None, **extra: str
    ) -> list[subprocess.Popen[bytes]]:
        for _ in range(count):
            log = open(tmp_path / f"worker-{len(started)}.log", "wb")  # noqa: SIM115
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "app.cli", "worker"],
                    env={**env, "DATABASE_URL": database_url or env["DATABASE_URL"], **extra},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
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
    from app import queue as queue_module

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


# --- concurrent I/O (issue 9) --------------------------------------------------------------


def _credential(client, keys, peer, name: str = "llm", **settings) -> None:
    response = client.post(
        "/api/v1/credentials",
        json={
            "name": name,
            "type": "openai",
            "data": {"apiKey": peer.api_key},
            "settings": {"baseUrl": peer.base_url, **settings},
        },
        headers=keys.header("editor"),
    )
    assert response.status_code == 201, response.json


def _ai_step(**config) -> dict:
    return {
        "id": "describe",
        "type": "ai_generate",
        "config": {
            "provider": "openai",
            "model": "gpt-test",
            "credential": "llm",
            "prompt": "Describe {{ entity.data.title }}",
            "outputField": "description",
            **config,
        },
    }


class InFlight:
    """A provider reply that takes ``seconds`` (``slow_seconds`` for titles in ``slow``)
    and records how many calls were in flight at once."""

    def __init__(self, seconds: float, slow: tuple[str, ...] = (), slow_seconds: float = 0):
        self.seconds, self.slow, self.slow_seconds = seconds, slow, slow_seconds
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict) -> str:
        text = str(body["messages"][-1]["content"])
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            slow = any(text.endswith(title) for title in self.slow)
            time.sleep(self.slow_seconds if slow else self.seconds)
        finally:
            with self.lock:
                self.now -= 1
        return f"about {text}"


def _items(session: Session, run_id: str) -> list[RunItem]:
    session.expire_all()
    items = list(session.scalars(select(RunItem).where(RunItem.run_id == run_id)))
    session.rollback()
    return items


def test_no_entity_times_out_waiting_behind_others_and_concurrency_holds(
    app_on_services, keys, session, workers
):
    """80 entities at 5 calls/s take 16 s; each entity's own work takes 0.3 s of a 3 s
    timeout. None may time out for the time it waited behind the others (in its claim,
    or for a rate-limit slot), and no more than ``concurrency`` calls are in flight."""
    client = app_on_services.test_client()
    reply = InFlight(0.3)
    with OpenAIPeer(api_key="sk-test-0123456789", reply=reply) as peer:
        _credential(client, keys, peer, requestsPerMinute=300)
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 80)]
        workflow = make_workflow(
            client,
            keys,
            entity_type["id"],
            [_ai_step()],
            settings={"entityTimeoutSeconds": 3, "concurrency": 30},
        )
        run_id = _run_over(client, keys, workflow, ids)
        workers(2)
        run = _wait(session, run_id, timeout=180)
    _assert_exact(session, run, 80)
    assert run.failed == 0 and run.completed == 80
    assert 1 < reply.peak <= 30  # concurrent, and never past the run's concurrency


def test_a_slow_entity_does_not_hold_up_the_rest_of_its_chunk(
    app_on_services, keys, session, workers
):
    client = app_on_services.test_client()
    reply = InFlight(0.05, slow=("Item 0",), slow_seconds=20)
    with OpenAIPeer(api_key="sk-test-0123456789", reply=reply) as peer:
        _credential(client, keys, peer)
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 40)]
        validate = {"id": "check", "type": "validate", "config": {"rules": [{"field": "title"}]}}
        workflow = make_workflow(client, keys, entity_type["id"], [_ai_step(), validate])
        run_id = _run_over(client, keys, workflow, ids)
        workers(1)
        _wait_for_progress(session, run_id, 39)
        # The other 39 went through both steps while the first entity's call still runs.
        slow = [i for i in _items(session, run_id) if i.entity_id == ids[0]][0]
        assert slow.status == "running"
        run = _wait(session, run_id, timeout=60)
    _assert_exact(session, run, 40)
    assert run.completed == 40, {i.error for i in _items(session, run_id)}


def test_kill_9_with_calls_in_flight_keeps_side_effects_exact(
    app_on_services, keys, session, workers
):
    """A worker dies with 50 deliveries in flight: each entity is published under one
    webhook-id, and notified at most once, never skipped unless it may have gone out."""
    client = app_on_services.test_client()
    with WebhookReceiver() as hooks, WebhookReceiver() as told:
        hooks.delay = 1.0
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 300)]
        steps = [
            {"id": "pub", "type": "publish", "config": {"target": {"url": hooks.url}}},
            {
                "id": "tell",
                "type": "notify",
                "config": {"channel": "webhook", "url": told.url, "message": "hi"},
            },
        ]
        workflow = make_workflow(client, keys, entity_type["id"], steps)
        run_id = _run_over(client, keys, workflow, ids)
        (victim,) = workers(1, CONVEYOR_WORKER_IO_CONCURRENCY="50")
        deadline = time.monotonic() + 60
        while len(hooks.requests) < 120 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)
        workers(1)
        run = _wait(session, run_id, timeout=120)
        _assert_exact(session, run, 300)
        assert run.completed == 300
        # publish: whatever was re-sent carried the same id, one id per entity
        assert set(hooks.ids) == {f"{run_id}:{e}:pub" for e in ids}
        # notify: at most once per entity...
        assert max(told.ids.values()) == 1
        not_resent = 0
        for item in _items(session, run_id):
            record = item.step_results[-1]
            assert record["stepId"] == "tell" and record["status"] == "completed"
            if f"{run_id}:{item.entity_id}:tell" not in told.ids:
                # ...and missing only where the dead worker may have sent it
                assert "not re-sent" in record["error"]
                not_resent += 1
        assert not_resent <= 50


def test_redis_killed_and_restarted_mid_run_the_run_finishes_by_itself(
    app_on_services, keys, session, workers, redis_server, slow_receiver, tmp_path
):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 1000, slow_receiver)
    run_id = _run_over(client, keys, workflow, ids)
    running = workers(2)
    _wait_for_progress(session, run_id, 100)
    redis_server.kill()  # connections break mid-run; everything Redis held is lost
    time.sleep(5)
    redis_server.start()  # empty, on the same port
    run = _wait(session, run_id, timeout=120)
    _assert_exact(session, run, 1000)
    assert run.cancelled == 0
    # no worker died or was restarted
    assert all(p.poll() is None for p in running), [
        (tmp_path / f"worker-{i}.log").read_text()[-3000:] for i in range(len(running))
    ]


def test_cancel_during_in_flight_calls_starts_nothing_after_it(
    app_on_services, keys, session, workers
):
    client = app_on_services.test_client()
    with WebhookReceiver() as hooks:
        hooks.delay = 0.5
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 500)]
        steps = [{"id": "pub", "type": "publish", "config": {"target": {"url": hooks.url}}}]
        workflow = make_workflow(client, keys, entity_type["id"], steps)
        run_id = _run_over(client, keys, workflow, ids)
        workers(1, CONVEYOR_WORKER_IO_CONCURRENCY="40")
        while len(hooks.requests) < 60:
            time.sleep(0.02)
        response = client.post(
            f"/api/v1/workflows/{workflow['id']}/runs/{run_id}/cancel",
            headers=keys.header("executor"),
        )
        answered = time.monotonic()
        assert response.status_code == 200, response.json
        run = _wait(session, run_id)
        late = [r for r in hooks.requests if r["at"] > answered + 1.0]
    assert run.status == "cancelled" and run.cancelled > 0
    _assert_exact(session, run, 500)
    assert late == []  # in-flight calls may finish; none starts a second after the cancel


def test_a_step_longer_than_the_lease_is_not_claimed_twice(app_on_services, keys, session, workers):
    """The lease (3 s here) is renewed while a 5 s delivery is in flight."""
    client = app_on_services.test_client()
    with WebhookReceiver() as hooks:
        hooks.delay = 5.0
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 20)]
        steps = [{"id": "pub", "type": "publish", "config": {"target": {"url": hooks.url}}}]
        workflow = make_workflow(client, keys, entity_type["id"], steps)
        run_id = _run_over(client, keys, workflow, ids)
        workers(2)
        run = _wait(session, run_id, timeout=60)
        assert len(hooks.requests) == 20  # one delivery per entity, no second lane's
    _assert_exact(session, run, 20)
    assert {i.attempts for i in _items(session, run_id)} == {1}


def test_cancel_after_a_crash_keeps_the_finished_steps_changes(
    app_on_services, keys, session, workers
):
    client = app_on_services.test_client()
    with WebhookReceiver() as hooks, WebhookReceiver() as told:
        told.delay = 30.0  # the worker dies while notifications are in flight
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 30)]
        steps = [
            {"id": "pub", "type": "publish", "config": {"target": {"url": hooks.url}}},
            {
                "id": "tell",
                "type": "notify",
                "config": {"channel": "webhook", "url": told.url, "message": "hi"},
            },
        ]
        workflow = make_workflow(client, keys, entity_type["id"], steps)
        run_id = _run_over(client, keys, workflow, ids)
        (victim,) = workers(1)
        while len(told.requests) < 30:
            time.sleep(0.02)
        time.sleep(1.0)  # the published entities' checkpoints are written
        os.kill(victim.pid, signal.SIGKILL)
        response = client.post(
            f"/api/v1/workflows/{workflow['id']}/runs/{run_id}/cancel",
            headers=keys.header("executor"),
        )
        assert response.status_code == 200, response.json
        workers(1)  # its sweeper releases the dead worker's items; a lane cancels them
        run = _wait(session, run_id, timeout=60)
    assert run.status == "cancelled"
    _assert_exact(session, run, 30)
    entities = {e.id: e for e in session.scalars(select(Entity).where(Entity.id.in_(ids)))}
    for item in _items(session, run_id):
        published = any(
            r["stepId"] == "pub" and r["status"] == "completed" for r in item.step_results
        )
        if published:  # publish finished: the entity is published, whatever came after
            entity = entities[item.entity_id]
            assert entity.status == "published" and entity.version == 2
    assert sum(1 for e in entities.values() if e.status == "published") == 30


def test_the_rate_limit_holds_across_two_workers(app_on_services, keys, session, workers):
    """A credential of 240 requests/min (4/s): the provider, enforcing 22 in any 5 s
    window, never answers 429, and the calls keep to the pace."""
    client = app_on_services.test_client()
    with OpenAIPeer(api_key="sk-test-0123456789", requests_per_minute=22, window_seconds=5) as peer:
        _credential(client, keys, peer, requestsPerMinute=240)
        entity_type = make_entity_type(client, keys)
        ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 60)]
        workflow = make_workflow(client, keys, entity_type["id"], [_ai_step()])
        run_id = _run_over(client, keys, workflow, ids)
        workers(2)
        run = _wait(session, run_id, timeout=120)
        assert peer.rate_limited == 0
        times = sorted(peer.completed_at)
    _assert_exact(session, run, 60)
    assert run.completed == 60
    # in any 5 s, at most the credential's 20 (+1 for a window's two edges)
    assert max(sum(1 for t in times if s <= t < s + 5) for s in times) <= 21


def test_a_run_started_while_redis_is_down_is_accepted_and_dispatched_when_it_returns(
    app_on_services, keys, session, workers, redis_server
):
    client = app_on_services.test_client()
    workflow, ids = _start(client, keys, 200)
    redis_server.kill()
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/run", json={"entityIds": ids}, headers=keys.header()
    )
    assert response.status_code == 202, response.json  # accepted: the run is stored
    runs = client.get(f"/api/v1/workflows/{workflow['id']}/runs", headers=keys.header()).json
    assert [r["id"] for r in runs] == [response.json["runId"]]
    redis_server.start()
    workers(1)  # its sweeper re-dispatches the pending run
    run = _wait(session, response.json["runId"], timeout=60)
    _assert_exact(session, run, 200)
