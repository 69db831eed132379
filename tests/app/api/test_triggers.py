"""``/api/v1/triggers``: CRUD, validation, scheduling on save, events, auth and isolation."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from app.ids import now_ms
from app.models import Trigger
from app.services.triggers import Outcome, SkipReason, record_event
from tests.app.api import assert_error
from tests.conftest import auth, make_entity_type, make_workflow

TRIGGERS = "/api/v1/triggers"
STEPS = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def workflow(client, keys):
    entity_type = make_entity_type(client, keys)
    return make_workflow(client, keys, entity_type["id"], STEPS, status="active")


def _create(client, keys, workflow, **body):
    payload = {"workflowId": workflow["id"], "type": "cron", "cron": "0 9 * * 1-5", **body}
    return client.post(TRIGGERS, json=payload, headers=keys.header("editor"))


def test_create_cron_trigger_is_scheduled_at_once(client, keys, workflow):
    response = _create(client, keys, workflow, timezone="Europe/Paris")
    assert response.status_code == 201, response.json
    body = response.json
    assert body["id"].startswith("trg_")
    assert body["workflowId"] == workflow["id"]
    assert body["type"] == "cron" and body["enabled"] is True
    assert body["cron"] == "0 9 * * 1-5" and body["timezone"] == "Europe/Paris"
    assert body["overlapPolicy"] == "skip" and body["catchUp"] == "none"
    assert body["selector"] is None and body["lastRunAt"] is None
    assert body["nextRunAt"] > now_ms()
    local = datetime.fromtimestamp(body["nextRunAt"] / 1000, PARIS)
    assert (local.hour, local.minute, local.weekday() < 5) == (9, 0, True)
    assert {"createdAt", "updatedAt"} <= set(body)


def test_create_normalises_cron_and_keeps_selector(client, keys, workflow):
    selector = {
        "status": "ready",
        "updatedSince": "lastRun",
        "entityTypeId": workflow["entityTypeId"],
    }
    response = _create(
        client,
        keys,
        workflow,
        cron="  */15   *  * * * ",
        selector=selector,
        overlapPolicy="queue",
        catchUp="last",
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["cron"] == "*/15 * * * *" and body["timezone"] == "UTC"
    assert body["selector"] == selector
    assert (body["overlapPolicy"], body["catchUp"]) == ("queue", "last")
    assert body["nextRunAt"] % (15 * 60_000) == 0


def test_webhook_trigger_has_no_schedule(client, keys, workflow):
    response = client.post(
        TRIGGERS,
        json={"workflowId": workflow["id"], "type": "webhook"},
        headers=keys.header("editor"),
    )
    assert response.status_code == 201, response.json
    assert response.json["type"] == "webhook"
    assert response.json["cron"] is None and response.json["nextRunAt"] is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"cron": "0 9 * *"}, "cron", "5 fields"),
        ({"cron": "0 0 9 * * *"}, "cron", "5 fields"),
        ({"cron": "61 9 * * *"}, "cron", "not a valid cron"),
        ({"cron": "*/0 * * * *"}, "cron", "not a valid cron"),
        ({"cron": "0 0 31 2 *"}, "cron", "never fires"),
        ({"cron": None}, "cron", "needs a cron"),
        ({"timezone": "Mars/Olympus"}, "timezone", "iana"),
        ({"timezone": "../../etc/passwd"}, "timezone", "iana"),
        ({"type": "hourly"}, "type", "must be one of"),
        ({"overlapPolicy": "replace"}, "overlapPolicy", "must be one of"),
        ({"catchUp": "all"}, "catchUp", "must be one of"),
        ({"selector": {"updatedSince": 123}}, "selector.updatedSince", "not a valid string"),
        ({"selector": {"updatedSince": "yesterday"}}, "selector.updatedSince", "must be one of"),
        ({"selector": {"colour": "red"}}, "selector.colour", "unknown"),
        ({"selector": {"entityTypeId": "ety_other"}}, "selector.entityTypeId", "entity type"),
        ({"workflowId": "wf_missing"}, "workflowId", "unknown workflow"),
        ({"type": "webhook"}, "cron", "webhook trigger has no cron"),
    ],
)
def test_create_validation_errors(client, keys, workflow, body, field, words):
    error = assert_error(_create(client, keys, workflow, **body), 422)
    assert field in error["errors"], error
    assert words in " ".join(error["errors"][field]).lower(), error
    assert words in error["message"].lower() or field in error["message"]


def test_get_list_and_filters(client, keys, workflow):
    other_type = make_entity_type(client, keys, name="Article")
    other = make_workflow(client, keys, other_type["id"], STEPS, status="active")
    cron = _create(client, keys, workflow).json
    paused = _create(client, keys, workflow, enabled=False).json
    hook = client.post(
        TRIGGERS, json={"workflowId": other["id"], "type": "webhook"}, headers=keys.header()
    ).json
    viewer = keys.header("viewer")

    def ids(query=""):
        response = client.get(f"{TRIGGERS}{query}", headers=viewer)
        assert response.status_code == 200, response.json
        return {t["id"] for t in response.json}

    assert ids() == {cron["id"], paused["id"], hook["id"]}
    assert ids(f"?workflowId={workflow['id']}") == {cron["id"], paused["id"]}
    assert ids("?type=webhook") == {hook["id"]}
    assert ids("?enabled=false") == {paused["id"]}
    assert ids("?enabled=true&type=cron") == {cron["id"]}
    assert paused["nextRunAt"] is None

    got = client.get(f"{TRIGGERS}/{cron['id']}", headers=viewer)
    assert got.status_code == 200 and got.json == cron

    first = client.get(f"{TRIGGERS}?limit=2", headers=viewer)
    assert len(first.json) == 2 and "X-Next-Cursor" in first.headers
    assert 'rel="next"' in first.headers["Link"]
    rest = client.get(f"{TRIGGERS}?limit=2&cursor={first.headers['X-Next-Cursor']}", headers=viewer)
    assert {t["id"] for t in first.json + rest.json} == ids()
    assert_error(client.get(f"{TRIGGERS}?type=never", headers=viewer), 422)


def test_patch_reschedules_on_schedule_changes(client, keys, workflow):
    trigger = _create(client, keys, workflow, cron="0 9 * * *", timezone="UTC").json
    url = f"{TRIGGERS}/{trigger['id']}"
    editor = keys.header("editor")

    moved = client.patch(url, json={"timezone": "Asia/Tokyo"}, headers=editor)
    assert moved.status_code == 200, moved.json
    tokyo = datetime.fromtimestamp(moved.json["nextRunAt"] / 1000, ZoneInfo("Asia/Tokyo"))
    assert (tokyo.hour, tokyo.minute) == (9, 0)
    assert moved.json["updatedAt"] >= trigger["updatedAt"]

    hourly = client.patch(url, json={"cron": "30 * * * *"}, headers=editor).json
    assert hourly["cron"] == "30 * * * *"
    assert datetime.fromtimestamp(hourly["nextRunAt"] / 1000).minute == 30
    assert hourly["nextRunAt"] - now_ms() <= 3_600_000

    disabled = client.patch(url, json={"enabled": False}, headers=editor).json
    assert disabled["enabled"] is False and disabled["nextRunAt"] is None
    enabled = client.patch(url, json={"enabled": True}, headers=editor).json
    assert enabled["nextRunAt"] == hourly["nextRunAt"]

    policy = client.patch(
        url, json={"overlapPolicy": "allow", "selector": {"status": "ready"}}, headers=editor
    ).json
    assert policy["overlapPolicy"] == "allow" and policy["selector"] == {"status": "ready"}
    assert policy["nextRunAt"] == enabled["nextRunAt"]

    error = assert_error(client.patch(url, json={"cron": "bad"}, headers=editor), 422)
    assert "cron" in error["errors"]
    assert_error(client.patch(url, json={"cron": None}, headers=editor), 422)
    assert_error(client.patch(url, json={"timezone": "Nowhere/City"}, headers=editor), 422)
    assert_error(client.patch(url, json={"type": "webhook"}, headers=editor), 422)
    assert_error(client.patch(url, json={"workflowId": workflow["id"]}, headers=editor), 422)
    unchanged = client.get(url, headers=editor).json
    assert unchanged["cron"] == "30 * * * *" and unchanged["timezone"] == "Asia/Tokyo"


def test_delete_removes_trigger_and_events(client, keys, workflow, session):
    trigger = _create(client, keys, workflow).json
    record_event(
        session,
        trigger_id=trigger["id"],
        outcome=Outcome.SKIPPED,
        scheduled_at=1,
        reason=SkipReason.MISSED,
        message="m",
    )
    session.commit()
    url = f"{TRIGGERS}/{trigger['id']}"
    assert client.delete(url, headers=keys.header("editor")).status_code == 204
    assert_error(client.get(url, headers=keys.header()), 404)
    assert_error(client.get(f"{url}/events", headers=keys.header()), 404)
    assert_error(client.delete(url, headers=keys.header("editor")), 404)
    session.expire_all()
    assert session.get(Trigger, trigger["id"]) is None
    session.rollback()  # end the read: SQLite's write lock is taken at BEGIN
    # The workflow can be deleted once its triggers are gone.
    assert (
        client.delete(f"/api/v1/workflows/{workflow['id']}", headers=keys.header()).status_code
        == 204
    )


def test_workflow_with_triggers_cannot_be_deleted(client, keys, workflow):
    _create(client, keys, workflow)
    assert_error(client.delete(f"/api/v1/workflows/{workflow['id']}", headers=keys.header()), 409)


def test_events_newest_first_paginated_and_filtered(client, keys, workflow, session):
    trigger = _create(client, keys, workflow).json
    for minute in range(5):
        record_event(
            session,
            trigger_id=trigger["id"],
            outcome=Outcome.SKIPPED if minute % 2 else Outcome.FIRED,
            scheduled_at=minute * 60_000,
            reason=SkipReason.OVERLAP if minute % 2 else None,
            message=f"minute {minute}",
            run_id=None if minute % 2 else f"run_{minute}",
        )
    session.commit()
    url = f"{TRIGGERS}/{trigger['id']}/events"
    viewer = keys.header("viewer")
    page = client.get(f"{url}?limit=3", headers=viewer)
    assert page.status_code == 200, page.json
    assert [e["scheduledAt"] for e in page.json] == [240_000, 180_000, 120_000]
    event = page.json[1]
    assert event == {
        "id": event["id"],
        "triggerId": trigger["id"],
        "outcome": "skipped",
        "reason": "overlap",
        "message": "minute 3",
        "runId": None,
        "scheduledAt": 180_000,
        "createdAt": event["createdAt"],
    }
    rest = client.get(f"{url}?limit=3&cursor={page.headers['X-Next-Cursor']}", headers=viewer)
    assert [e["scheduledAt"] for e in rest.json] == [60_000, 0]
    assert "X-Next-Cursor" not in rest.headers
    fired = client.get(f"{url}?outcome=fired", headers=viewer).json
    assert [e["runId"] for e in fired] == ["run_4", "run_2", "run_0"]
    assert_error(client.get(f"{url}?outcome=exploded", headers=viewer), 422)


def test_auth_roles_and_workspace_isolation(client, keys, workflow):
    trigger = _create(client, keys, workflow).json
    url = f"{TRIGGERS}/{trigger['id']}"
    assert_error(client.get(TRIGGERS), 401)
    assert_error(client.get(url, headers={"Authorization": "Bearer cvk_nope"}), 401)
    assert_error(client.post(TRIGGERS, json={}), 401)
    for role in ("viewer", "executor"):
        assert_error(
            client.post(
                TRIGGERS,
                json={"workflowId": workflow["id"], "type": "webhook"},
                headers=keys.header(role),
            ),
            403,
        )
        assert_error(client.patch(url, json={"enabled": False}, headers=keys.header(role)), 403)
        assert_error(client.delete(url, headers=keys.header(role)), 403)
    assert client.get(url, headers=keys.header("viewer")).status_code == 200

    other = auth(keys.other_admin)
    assert_error(client.get(url, headers=other), 404)
    assert_error(client.get(f"{url}/events", headers=other), 404)
    assert_error(client.patch(url, json={"enabled": False}, headers=other), 404)
    assert_error(client.delete(url, headers=other), 404)
    assert client.get(TRIGGERS, headers=other).json == []
    # Another workspace's workflow is unknown here.
    error = assert_error(
        client.post(
            TRIGGERS, json={"workflowId": workflow["id"], "type": "webhook"}, headers=other
        ),
        422,
    )
    assert "workflowId" in error["errors"]


def test_openapi_documents_triggers_and_webhooks(client):
    paths = client.get("/api/v1/openapi.json").json["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/triggers"])
    assert {"get", "patch", "delete"} <= set(paths["/api/v1/triggers/{trigger_id}"])
    assert "get" in paths["/api/v1/triggers/{trigger_id}/events"]
    webhook = paths["/api/v1/webhooks/{trigger_id}"]["post"]
    assert "202" in webhook["responses"] and "requestBody" in webhook
