"""``POST /api/v1/webhooks/{triggerId}``: runs started by deliveries, exactly once per key."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from app.models import Run, TriggerEvent
from tests.app.api import assert_error
from tests.conftest import auth, make_entities, make_entity_type, make_workflow

STEPS = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]
TRIGGERS = "/api/v1/triggers"


@pytest.fixture
def setup(client, keys):
    """An active workflow over 6 entities (2 of them ``ready``) and a webhook trigger."""
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 6)
    for entity in entities[:2]:
        response = client.patch(
            f"/api/v1/entities/{entity['id']}", json={"status": "ready"}, headers=keys.header()
        )
        assert response.status_code == 200
    workflow = make_workflow(client, keys, entity_type["id"], STEPS, status="active")
    trigger = client.post(
        TRIGGERS,
        json={"workflowId": workflow["id"], "type": "webhook", "selector": {"status": "ready"}},
        headers=keys.header("editor"),
    ).json
    return {"entities": entities, "workflow": workflow, "trigger": trigger}


def _fire(client, keys, trigger_id, body=None, role="executor", **headers):
    return client.post(
        f"/api/v1/webhooks/{trigger_id}", json=body, headers={**keys.header(role), **headers}
    )


def _run(session, run_id) -> Run:
    session.expire_all()
    run = session.get(Run, run_id)
    session.expunge(run)  # keep its loaded fields
    session.rollback()  # end the read: SQLite takes its write lock at BEGIN
    return run


def _events(client, keys, trigger_id) -> list[dict[str, Any]]:
    response = client.get(f"{TRIGGERS}/{trigger_id}/events?limit=1000", headers=keys.header())
    assert response.status_code == 200
    return response.json


def test_fire_with_entity_ids_starts_run_with_body_as_input(client, keys, session, setup):
    trigger = setup["trigger"]
    chosen = [e["id"] for e in setup["entities"][3:6]]
    body = {"entityIds": chosen, "source": "cms", "nested": {"n": 1}}
    response = _fire(client, keys, trigger["id"], body)
    assert response.status_code == 202, response.json
    assert set(response.json) == {"jobId", "runId", "eventId", "outcome", "reason"}
    assert response.json["outcome"] == "fired" and response.json["reason"] is None
    run = _run(session, response.json["runId"])
    assert run.job_id == response.json["jobId"]
    assert run.total == 3 and run.input == body
    assert (run.trigger_type, run.trigger_id) == ("webhook", trigger["id"])
    api_run = client.get(
        f"/api/v1/workflows/{setup['workflow']['id']}/runs/{run.id}", headers=keys.header()
    ).json
    assert api_run["trigger"] == {"type": "webhook", "triggerId": trigger["id"]}
    [event] = _events(client, keys, trigger["id"])
    assert event["id"] == response.json["eventId"]
    assert (event["outcome"], event["runId"], event["scheduledAt"]) == ("fired", run.id, None)
    after = client.get(f"{TRIGGERS}/{trigger['id']}", headers=keys.header()).json
    assert after["lastRunAt"] is not None and after["nextRunAt"] is None


def test_fire_without_entity_ids_uses_the_selector(client, keys, session, setup):
    response = _fire(client, keys, setup["trigger"]["id"], {"hello": "world"})
    assert response.status_code == 202, response.json
    run = _run(session, response.json["runId"])
    assert run.total == 2 and run.input == {"hello": "world"}


def test_fire_with_empty_or_non_object_body(client, keys, session, setup):
    trigger_id = setup["trigger"]["id"]
    empty = client.post(f"/api/v1/webhooks/{trigger_id}", headers=keys.header("executor"))
    assert empty.status_code == 202, empty.json
    assert _run(session, empty.json["runId"]).input is None
    listed = _fire(client, keys, trigger_id, [1, 2, 3])
    assert listed.status_code == 202
    assert _run(session, listed.json["runId"]).input == [1, 2, 3]


def test_empty_selection_records_event_and_starts_no_run(client, keys, session, setup):
    trigger_id = setup["trigger"]["id"]
    patched = client.patch(
        f"{TRIGGERS}/{trigger_id}", json={"selector": {"status": "nothing"}}, headers=keys.header()
    )
    assert patched.status_code == 200
    response = _fire(client, keys, trigger_id, {"x": 1})
    assert response.status_code == 202, response.json
    assert response.json["runId"] is None and response.json["jobId"] is None
    assert (response.json["outcome"], response.json["reason"]) == ("skipped", "empty_selection")
    assert session.scalar(select(func.count()).select_from(Run)) == 0
    session.rollback()
    [event] = _events(client, keys, trigger_id)
    assert (event["outcome"], event["reason"]) == ("skipped", "empty_selection")


def test_entity_id_errors_are_422(client, keys, setup):
    trigger_id = setup["trigger"]["id"]
    known = setup["entities"][0]["id"]
    error = assert_error(_fire(client, keys, trigger_id, {"entityIds": [known, "ent_nope"]}), 422)
    assert error["errors"]["entityIds"] == ["ent_nope"]
    error = assert_error(_fire(client, keys, trigger_id, {"entityIds": "ent_nope"}), 422)
    assert "entityIds" in error["errors"]
    assert _events(client, keys, trigger_id) == []


def test_malformed_json_is_400_and_large_body_413(client, keys, setup):
    url = f"/api/v1/webhooks/{setup['trigger']['id']}"
    headers = {**keys.header("executor"), "Content-Type": "application/json"}
    assert_error(client.post(url, data=b"{not json", headers=headers), 400)
    too_big = b'{"blob": "' + b"x" * (1024 * 1024) + b'"}'
    error = assert_error(client.post(url, data=too_big, headers=headers), 413)
    assert "at most 1,048,576 bytes" in error["message"]
    near_limit = b'{"blob": "' + b"x" * (1000 * 1000) + b'"}'
    assert client.post(url, data=near_limit, headers=headers).status_code == 202


def test_auth_and_not_found(client, keys, setup):
    trigger_id = setup["trigger"]["id"]
    assert_error(client.post(f"/api/v1/webhooks/{trigger_id}", json={}), 401)
    assert_error(_fire(client, keys, trigger_id, {}, role="viewer"), 403)
    assert _fire(client, keys, trigger_id, {}, role="editor").status_code == 202
    other = client.post(f"/api/v1/webhooks/{trigger_id}", json={}, headers=auth(keys.other_admin))
    assert_error(other, 404)
    assert_error(_fire(client, keys, "trg_unknown", {}), 404)
    cron = client.post(
        TRIGGERS,
        json={"workflowId": setup["workflow"]["id"], "type": "cron", "cron": "0 9 * * *"},
        headers=keys.header(),
    ).json
    error = assert_error(_fire(client, keys, cron["id"], {}), 404)
    assert "cron trigger" in error["message"]


def test_disabled_trigger_or_inactive_workflow_is_409(client, keys, setup):
    trigger_id = setup["trigger"]["id"]
    workflow_url = f"/api/v1/workflows/{setup['workflow']['id']}"
    client.patch(f"{TRIGGERS}/{trigger_id}", json={"enabled": False}, headers=keys.header())
    error = assert_error(_fire(client, keys, trigger_id, {}, **{"Idempotency-Key": "k1"}), 409)
    assert "disabled" in error["message"]
    client.patch(f"{TRIGGERS}/{trigger_id}", json={"enabled": True}, headers=keys.header())
    for status in ("draft", "archived"):
        client.patch(workflow_url, json={"status": status}, headers=keys.header())
        error = assert_error(_fire(client, keys, trigger_id, {}), 409)
        assert status in error["message"]
    client.patch(workflow_url, json={"status": "active"}, headers=keys.header())
    # The refused delivery's key was not used up: a retry now starts the run.
    assert _fire(client, keys, trigger_id, {}, **{"Idempotency-Key": "k1"}).status_code == 202
    events = _events(client, keys, trigger_id)
    assert [(e["outcome"], e["reason"]) for e in events] == [
        ("fired", None),
        ("skipped", "workflow_not_active"),
        ("skipped", "workflow_not_active"),
        ("skipped", "trigger_disabled"),
    ]


def test_idempotency_key_replays_and_refuses_other_body(client, keys, session, setup):
    trigger_id = setup["trigger"]["id"]
    first = _fire(client, keys, trigger_id, {"a": 1}, **{"Idempotency-Key": "delivery-1"})
    again = _fire(client, keys, trigger_id, {"a": 1}, **{"Idempotency-Key": "delivery-1"})
    assert first.status_code == again.status_code == 202
    assert first.json == again.json
    assert_error(
        _fire(client, keys, trigger_id, {"a": 2}, **{"Idempotency-Key": "delivery-1"}), 422
    )
    assert session.scalar(select(func.count()).select_from(Run)) == 1
    session.rollback()
    assert len(_events(client, keys, trigger_id)) == 1


def _concurrently(app, keys, trigger_id, key_for) -> list[Any]:
    """POST 20 deliveries at once from 20 threads, each with its own test client."""
    barrier = threading.Barrier(20)
    results: list[Any] = [None] * 20

    def deliver(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(
            f"/api/v1/webhooks/{trigger_id}",
            json={"delivery": "same"},
            headers={**keys.header("executor"), "Idempotency-Key": key_for(index)},
        )
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def _webhook_runs(session, trigger_id) -> int:
    session.expire_all()
    count = session.scalar(
        select(func.count()).select_from(Run).where(Run.trigger_id == trigger_id)
    )
    session.rollback()
    return int(count or 0)


def test_twenty_concurrent_deliveries_with_one_key_start_one_run(app, keys, session, setup):
    trigger_id = setup["trigger"]["id"]
    results = _concurrently(app, keys, trigger_id, lambda _i: "same-delivery")
    assert [status for status, _ in results] == [202] * 20, results
    assert len({body["runId"] for _, body in results}) == 1
    assert _webhook_runs(session, trigger_id) == 1
    events = session.scalar(
        select(func.count()).select_from(TriggerEvent).where(TriggerEvent.trigger_id == trigger_id)
    )
    session.rollback()
    assert events == 1


def test_twenty_concurrent_deliveries_with_own_keys_start_twenty_runs(app, keys, session, setup):
    trigger_id = setup["trigger"]["id"]
    results = _concurrently(app, keys, trigger_id, lambda i: f"delivery-{i}")
    assert [status for status, _ in results] == [202] * 20, results
    assert len({body["runId"] for _, body in results}) == 20
    assert _webhook_runs(session, trigger_id) == 20
