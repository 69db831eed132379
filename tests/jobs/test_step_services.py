"""``jobs.step_services``: what the engine hands steps as ``ctx.services``, end to end."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import delete
from sqlmodel import Session

from app.models import Credential, Run
from app.redaction import RedactingFilter, install_log_redaction
from jobs.step_services import (
    build_services,
    format_duration,
    limiter_for,
    send_run_summary,
    summary_line,
)
from steps.clients.ratelimit import LocalRateLimiter, RedisRateLimiter
from steps.errors import StepError
from tests.conftest import PG_URL, REDIS_URL, Keys, make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import wait_for_run
from tests.peers import OpenAIPeer, SmtpPeer, WebhookReceiver, new_webhook_secret
from tests.steps.support import add_credential, runtime_for


@pytest.fixture
def settings(settings):
    """The embedded workers of these tests may call peers on 127.0.0.1."""
    return dataclasses.replace(settings, outbound_allow_hosts=("127.0.0.1",))


@pytest.fixture
def workspace(keys):
    return keys.workspace.id


@pytest.fixture
def runtime(app, settings):
    return runtime_for(app, settings)


def test_build_services_offers_the_engine_interface(runtime, workspace):
    services = build_services(runtime, workspace, "run_1")
    for name in ("deliver", "notify", "secrets"):
        assert callable(getattr(services, name))
    assert callable(services.llm.generate)
    assert services.secrets() == []
    assert services.policy.allow_hosts == ("127.0.0.1",)


def test_credentials_load_once_per_chunk_and_feed_redaction(runtime, workspace, session, settings):
    secret = new_webhook_secret()
    add_credential(session, settings, workspace, "hook", "webhook", {"secret": secret})
    services = build_services(runtime, workspace, "run_1")
    first = services.credentials.get("hook")
    session.execute(delete(Credential))
    session.commit()
    assert services.credentials.get("hook") is first  # cached for the chunk
    assert services.secrets() == [secret]
    with pytest.raises(StepError, match="No credential named 'hook'"):
        build_services(runtime, workspace, "run_2").credentials.get("hook")


def test_credentials_of_another_workspace_are_invisible(runtime, keys, session, settings):
    add_credential(
        session,
        settings,
        keys.other_workspace.id,
        "hook",
        "webhook",
        {"secret": new_webhook_secret()},
    )
    with pytest.raises(StepError, match="No credential named 'hook'"):
        build_services(runtime, keys.workspace.id, "run_1").credentials.get("hook")


def test_loaded_secrets_are_scrubbed_from_log_records(runtime, workspace, session, settings):
    add_credential(
        session,
        settings,
        workspace,
        "slack",
        "slack",
        {"url": "http://127.0.0.1:1/services/T000/B000/XyzSecretToken"},
    )
    build_services(runtime, workspace, "run_1").credentials.get("slack")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = logging.getLogger("test.redaction")
    handler = Keep()
    logger.addHandler(handler)
    try:
        install_log_redaction(logger)
        assert any(isinstance(f, RedactingFilter) for f in handler.filters)
        logger.warning(
            "posting to %s failed", "http://127.0.0.1:1/services/T000/B000/XyzSecretToken"
        )
    finally:
        logger.removeHandler(handler)
    assert records == ["posting to [REDACTED] failed"]


def test_the_limiter_is_shared_through_redis_when_there_is_one(settings):
    assert isinstance(limiter_for(settings), LocalRateLimiter)
    assert limiter_for(settings) is limiter_for(settings)
    with_redis = dataclasses.replace(settings, redis_url="redis://127.0.0.1:6379/15")
    assert isinstance(limiter_for(with_redis), RedisRateLimiter)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0, "0 s"),
        (45_400, "45 s"),
        (130_000, "2 m 10 s"),
        (3_600_000, "1 h 0 m 0 s"),
        (3_725_000, "1 h 2 m 5 s"),
    ],
)
def test_format_duration(ms, text):
    assert format_duration(ms) == text


def finished_run(workspace: str, **kw) -> Run:
    values = dict(
        id="run_1",
        workspace_id=workspace,
        workflow_id="wf_1",
        workflow_version=1,
        job_id="job_1",
        status="completed",
        total=415,
        completed=412,
        failed=3,
        cancelled=0,
        created_at=1_000,
        started_at=2_000,
        completed_at=132_000,
        steps=[],
        settings={},
    )
    values.update(kw)
    return Run(**values)


def test_run_summary_line():
    assert summary_line(finished_run("ws")) == "412 completed, 3 failed, 2 m 10 s"
    assert summary_line(finished_run("ws", cancelled=2)) == (
        "412 completed, 3 failed, 2 cancelled, 2 m 10 s"
    )


def test_run_summary_to_slack_with_a_link(runtime, workspace):
    with WebhookReceiver() as slack:
        config = {
            "channel": "slack",
            "url": slack.url + "/hook",
            "link_base_url": "https://conveyor.example.com/",
        }
        send_run_summary(runtime, finished_run(workspace), {"notify_on_finish": config})
    [delivery] = slack.deliveries
    assert delivery["json"]["text"] == (
        "*Conveyor: wf_1 run completed (412 completed, 3 failed, 2 m 10 s)*\n"
        "Run run_1 of workflow 'wf_1' completed: 412 completed, 3 failed, 2 m 10 s.\n"
        "https://conveyor.example.com/api/v1/workflows/wf_1/runs/run_1"
    )


def test_run_summary_by_email(runtime, workspace, session, settings):
    with SmtpPeer(tls="starttls") as peer:
        add_credential(
            session,
            settings,
            workspace,
            "mail",
            "smtp",
            {"password": "s3cret-pw"},
            {
                "host": "127.0.0.1",
                "port": peer.port,
                "username": "mailer",
                "fromAddress": "conveyor@example.com",
                "verifyTls": False,
            },
        )
        config = {"channel": "email", "to": ["team@example.com"], "credential": "mail"}
        send_run_summary(
            runtime, finished_run(workspace, status="failed"), {"notify_on_finish": config}
        )
    [message] = peer.messages
    assert message["subject"] == "Conveyor: wf_1 run failed (412 completed, 3 failed, 2 m 10 s)"
    assert message["to"] == ["team@example.com"]


def test_a_summary_that_cannot_be_sent_raises_for_the_engine_to_log(runtime, workspace):
    config = {"channel": "webhook", "url": "http://127.0.0.1:9/hook"}
    with pytest.raises(RuntimeError, match="could not connect"):
        send_run_summary(runtime, finished_run(workspace), {"notify_on_finish": config})


def test_a_run_generates_publishes_and_summarises(client, keys, session, settings):
    """Through the engine: ai_generate on the OpenAI peer, signed publish, one summary."""
    secret = new_webhook_secret()
    with OpenAIPeer() as llm, WebhookReceiver(secret) as receiver, WebhookReceiver() as slack:
        add_credential(
            session,
            settings,
            keys.workspace.id,
            "oa",
            "openai",
            {"apiKey": llm.api_key},
            {"baseUrl": llm.base_url, "requestsPerMinute": 6000},
        )
        add_credential(session, settings, keys.workspace.id, "hook", "webhook", {"secret": secret})
        entity_type = make_entity_type(client, keys)
        entities = make_entities(client, keys, entity_type["id"], 6)
        steps = [
            {
                "id": "gen",
                "type": "ai_generate",
                "config": {
                    "provider": "openai",
                    "model": "gpt-test",
                    "credential": "oa",
                    "prompt": "Tagline for {{ entity.data.title }}",
                    "outputField": "tagline",
                },
            },
            {
                "id": "pub",
                "type": "publish",
                "config": {"target": {"url": receiver.url + "/in", "credential": "hook"}},
            },
        ]
        workflow = make_workflow(
            client,
            keys,
            entity_type["id"],
            steps,
            settings={"notifyOnFinish": {"channel": "slack", "url": slack.url}},
        )
        response = client.post(
            f"/api/v1/workflows/{workflow['id']}/run",
            json={"entityIds": [e["id"] for e in entities]},
            headers=keys.header("executor"),
        )
        assert response.status_code == 202, response.json
        run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
        assert run["status"] == "completed", run
        entity = client.get(f"/api/v1/entities/{entities[2]['id']}", headers=keys.header()).json
        assert entity["data"]["tagline"] == "echo: Tagline for Item 2"
        assert entity["status"] == "published"
        assert receiver.unique_ids == 6 and receiver.rejected == 0
        assert {d["json"]["data"]["entity"]["id"] for d in receiver.deliveries} == {
            e["id"] for e in entities
        }
        assert llm.completions == 6
        # finalize sends the summary after the run's commit; give it a moment
        for _ in range(100):
            if slack.deliveries:
                break
            time.sleep(0.05)
    assert len(slack.deliveries) == 1
    assert "6 completed, 0 failed" in slack.deliveries[0]["json"]["text"]


@pytest.mark.real_services
@pytest.mark.skipif(
    os.environ.get("CONVEYOR_TEST_SERVICES") != "1" or not PG_URL,
    reason="needs CONVEYOR_TEST_SERVICES=1 and CONVEYOR_TEST_DATABASE_URL (PostgreSQL)",
)
def test_publish_killed_mid_step_and_resumed_delivers_each_entity_once(settings):
    """A worker is SIGKILLed while a publish is in flight; another resumes the run; the
    receiver, deduping on webhook-id, sees every entity exactly once."""
    from app import create_app, queue

    settings = dataclasses.replace(settings, redis_url=REDIS_URL)
    application = create_app(
        {"CONVEYOR": settings, "AUTO_MIGRATE": False, "TESTING": True, "EMBEDDED_SWEEPER": False}
    )
    client = application.test_client()
    session = Session(application.extensions["conveyor.engine"], expire_on_commit=False)
    keys = Keys(session)
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": REDIS_URL,
        "CONVEYOR_SECRET_KEY": settings.secret_keys[0],
        "CONVEYOR_OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
        "CONVEYOR_LEASE_SECONDS": "3",
        "CONVEYOR_SWEEP_SECONDS": "1",
    }
    command = [str(Path(sys.executable).parent / "conveyor"), "worker"]
    workers: list[subprocess.Popen[bytes]] = []
    secret = new_webhook_secret()
    try:
        with WebhookReceiver(secret) as receiver:
            receiver.delay = 0.2  # deliveries in flight long enough to be killed mid-step
            add_credential(
                session, settings, keys.workspace.id, "hook", "webhook", {"secret": secret}
            )
            entity_type = make_entity_type(client, keys)
            entities = make_entities(client, keys, entity_type["id"], 30)
            steps = [
                {
                    "id": "pub",
                    "type": "publish",
                    "config": {"target": {"url": receiver.url, "credential": "hook"}},
                }
            ]
            workflow = make_workflow(client, keys, entity_type["id"], steps)
            workers.append(subprocess.Popen([*command, "--name", f"a-{uuid.uuid4()}"], env=env))
            response = client.post(
                f"/api/v1/workflows/{workflow['id']}/run",
                json={"entityIds": [e["id"] for e in entities]},
                headers=keys.header("executor"),
            )
            run_id = response.json["runId"]
            deadline = time.monotonic() + 60
            while len(receiver.requests) < 8 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)  # the next delivery is now inside the receiver's delay
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            workers.append(subprocess.Popen([*command, "--name", f"b-{uuid.uuid4()}"], env=env))
            run = wait_for_run(client, keys, workflow["id"], run_id, timeout=90)
            attempts = sum(receiver.ids.values())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
                try:
                    worker.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
        queue.shutdown_app(application)
        session.close()
    assert run["status"] == "completed", run
    assert run["progress"]["completed"] == 30
    assert receiver.rejected == 0
    assert set(receiver.ids) == {f"{run_id}:{e['id']}:pub" for e in entities}
    assert attempts >= 30  # a re-sent delivery (same webhook-id) is deduped by the receiver
