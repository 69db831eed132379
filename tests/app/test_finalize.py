"""A run closed in the web process (a review decision that ends its last items) still sends
its summary: the API finalizes it (``app.services.finalize``) and queues
``NOTIFY_FINISHED`` for a worker to send."""

from __future__ import annotations

import dataclasses
import time

import pytest

from tests.conftest import make_entities, make_entity_type, make_workflow
from tests.peers import WebhookReceiver

GATE = {"id": "review", "type": "approval", "config": {}}


@pytest.fixture
def settings(settings):
    """The summary goes to a local receiver."""
    return dataclasses.replace(settings, outbound_allow_hosts=("127.0.0.1",))


def _until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_decision_that_ends_the_run_sends_its_summary_once(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 5)
    with WebhookReceiver() as slack:
        workflow = make_workflow(
            client,
            keys,
            entity_type["id"],
            [GATE],
            settings={"notifyOnFinish": {"channel": "slack", "url": slack.url}},
        )
        started = client.post(
            f"/api/v1/workflows/{workflow['id']}/run",
            json={"entityIds": [e["id"] for e in entities]},
            headers=keys.header("executor"),
        )
        assert started.status_code == 202, started.json
        url = f"/api/v1/workflows/{workflow['id']}/runs/{started.json['runId']}"

        def waiting() -> int:
            return client.get(url, headers=keys.header()).json["progress"]["awaitingApproval"]

        assert _until(lambda: waiting() == 5)
        pending = client.get(
            f"/api/v1/approvals?runId={started.json['runId']}", headers=keys.header()
        ).json
        decided = client.post(
            "/api/v1/approvals/decide",
            json={"ids": [a["id"] for a in pending], "decision": "reject"},
            headers=keys.header("executor"),
        )
        assert decided.status_code == 200 and decided.json["decided"] == 5, decided.json
        assert client.get(url, headers=keys.header()).json["status"] == "failed"
        assert _until(lambda: bool(slack.deliveries))
        time.sleep(0.2)  # a second summary would have had time to arrive
    assert len(slack.deliveries) == 1
    assert "run failed" in slack.deliveries[0]["json"]["text"]
    assert "0 completed, 5 failed" in slack.deliveries[0]["json"]["text"]
