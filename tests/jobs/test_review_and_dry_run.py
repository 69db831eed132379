"""Review gates and dry runs through the real engine (embedded queue; SQLite or PostgreSQL)."""

from __future__ import annotations

import time

from sqlalchemy import select

from app.models import RunItem
from tests.conftest import make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import wait_for_run
from tests.peers import WebhookReceiver

SLUG = {
    "id": "shape",
    "type": "transform",
    "config": {"set": {"slug": "{{ entity.data.title | lower | replace(' ', '-') }}"}},
}
DESCRIBE = {
    "id": "describe",
    "type": "ai_generate",
    "config": {
        "provider": "template",
        "prompt": "A fine {{ entity.data.title }}",
        "outputField": "description",
    },
}


def _run(client, keys, workflow_id: str, **body) -> str:
    response = client.post(
        f"/api/v1/workflows/{workflow_id}/run", json=body, headers=keys.header("executor")
    )
    assert response.status_code == 202, response.json
    return response.json["runId"]


def _progress(client, keys, workflow_id: str, run_id: str) -> dict:
    return client.get(
        f"/api/v1/workflows/{workflow_id}/runs/{run_id}", headers=keys.header("viewer")
    ).json


def _wait_until(predicate, timeout: float = 30.0, state=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not reached: {state()}")


def test_a_dry_run_writes_no_entity_sends_nothing_and_shows_the_patches(app, client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 60)
    with WebhookReceiver() as hooks, WebhookReceiver() as told:
        steps = [
            SLUG,
            DESCRIBE,
            {"id": "pub", "type": "publish", "config": {"target": {"url": hooks.url}}},
            {
                "id": "tell",
                "type": "notify",
                "config": {"channel": "webhook", "url": told.url, "message": "{{ entity.id }}"},
            },
        ]
        workflow = make_workflow(client, keys, entity_type["id"], steps)
        run_id = _run(
            client,
            keys,
            workflow["id"],
            entityIds=[e["id"] for e in entities],
            dryRun=True,
            sample=50,
        )
        run = wait_for_run(client, keys, workflow["id"], run_id)
        assert hooks.requests == [] and told.requests == []  # nothing left the process
    assert run["status"] == "completed" and run["dryRun"] is True
    assert run["progress"]["total"] == run["progress"]["completed"] == 50
    for entity in entities:  # no entity was written
        stored = client.get(f"/api/v1/entities/{entity['id']}", headers=keys.header()).json
        assert stored["version"] == 1 and stored["status"] == "draft"
        assert "slug" not in stored["data"] and "description" not in stored["data"]
    items = client.get(
        f"/api/v1/workflows/{workflow['id']}/runs/{run_id}/items?limit=100",
        headers=keys.header(),
    ).json
    assert len(items) == 50
    for item in items:
        patch = {(op["op"], op["path"]): op.get("value") for op in item["changes"]["patch"]}
        index = int(patch[("add", "/data/slug")].removeprefix("item-"))
        assert patch[("add", "/data/description")] == f"A fine Item {index}"
        assert patch[("replace", "/status")] == "published"
        requests = item["changes"]["requests"]
        assert [r["stepId"] for r in requests] == ["pub", "tell"]
        assert requests[0]["url"] == hooks.url
        assert requests[0]["body"]["data"]["entity"]["data"]["slug"] == f"item-{index}"
        assert requests[1]["message"] == item["entityId"]
        assert item["steps"][-1]["output"] == {"channel": "webhook", "delivered": False}


def test_entities_wait_at_a_gate_holding_nothing_and_go_on_when_approved(
    app, client, keys, session
):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 30)
    gate = {
        "id": "review",
        "type": "approval",
        "config": {"instructions": "Check {{ entity.data.slug }}", "onReject": "fail"},
    }
    steps = [SLUG, gate, {"id": "pub", "type": "publish", "config": {}}]
    workflow = make_workflow(client, keys, entity_type["id"], steps)
    run_id = _run(client, keys, workflow["id"], entityIds=[e["id"] for e in entities])
    _wait_until(
        lambda: (
            _progress(client, keys, workflow["id"], run_id)["progress"]["awaitingApproval"] == 30
        )
    )
    run = _progress(client, keys, workflow["id"], run_id)
    assert run["status"] == "running"
    # Parked: no claim, no lease; and the workers are free for another run meanwhile.
    held = session.scalars(
        select(RunItem.claim_token).where(
            RunItem.run_id == run_id, RunItem.claim_token.is_not(None)
        )
    ).all()
    session.rollback()
    assert held == []
    other = make_workflow(client, keys, entity_type["id"], [SLUG])
    other_run = _run(client, keys, other["id"], entityIds=[e["id"] for e in entities[:5]])
    assert wait_for_run(client, keys, other["id"], other_run)["status"] == "completed"

    approvals = client.get(
        f"/api/v1/approvals?runId={run_id}&limit=100", headers=keys.header("viewer")
    ).json
    assert len(approvals) == 30
    first = approvals[0]
    assert first["instructions"].startswith("Check item-")
    assert first["preview"]["data"]["slug"].startswith("item-")
    chosen = [a["id"] for a in approvals[:10]]
    decided = client.post(
        "/api/v1/approvals/decide",
        json={"ids": chosen, "decision": "approve"},
        headers=keys.header("executor"),
    )
    assert decided.status_code == 200 and decided.json["decided"] == 10
    _wait_until(
        lambda: _progress(client, keys, workflow["id"], run_id)["progress"]["completed"] == 10
    )
    rest = client.post(
        "/api/v1/approvals/decide",
        json={"filter": {"runId": run_id, "stepId": "review"}, "decision": "reject"},
        headers=keys.header("executor"),
    )
    assert rest.json["decided"] == 20
    run = wait_for_run(client, keys, workflow["id"], run_id)
    assert run["progress"]["completed"] == 10 and run["progress"]["failed"] == 20
    approved = {a["entityId"] for a in approvals[:10]}
    for entity in entities:
        stored = client.get(f"/api/v1/entities/{entity['id']}", headers=keys.header()).json
        if entity["id"] in approved:
            assert stored["status"] == "published" and stored["data"]["slug"].startswith("item-")
        else:  # rejected, onReject fail: its stored data is untouched
            assert stored["status"] == "draft" and stored["version"] == 1


def test_a_dry_run_passes_a_gate_as_if_approved(app, client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 5)
    gate = {"id": "review", "type": "approval", "config": {}}
    workflow = make_workflow(client, keys, entity_type["id"], [SLUG, gate])
    run_id = _run(client, keys, workflow["id"], entityIds=[e["id"] for e in entities], dryRun=True)
    run = wait_for_run(client, keys, workflow["id"], run_id)
    assert run["progress"]["completed"] == 5
    assert client.get(f"/api/v1/approvals?runId={run_id}", headers=keys.header()).json == []


def test_ten_thousand_waiting_hold_no_worker_and_4000_approved_resume_exactly(
    app, client, keys, session
):
    entity_type = make_entity_type(client, keys)
    entities = []
    for _ in range(2):  # the bulk endpoint takes 10,000 at most per call
        entities += make_entities(client, keys, entity_type["id"], 5000)
    gate = {"id": "review", "type": "approval", "config": {}}
    steps = [SLUG, gate, {"id": "pub", "type": "publish", "config": {}}]
    workflow = make_workflow(client, keys, entity_type["id"], steps)
    run_id = _run(client, keys, workflow["id"], entityIds=[e["id"] for e in entities])

    def progress() -> dict:
        return _progress(client, keys, workflow["id"], run_id)["progress"]

    _wait_until(lambda: progress()["awaitingApproval"] == 10_000, timeout=120, state=progress)
    # Waiting holds no worker: another run goes through from start to end meanwhile.
    other = make_workflow(client, keys, entity_type["id"], [SLUG])
    other_run = _run(client, keys, other["id"], entityIds=[e["id"] for e in entities[:50]])
    assert wait_for_run(client, keys, other["id"], other_run)["status"] == "completed"

    ids, cursor = [], None
    while len(ids) < 4000:
        url = f"/api/v1/approvals?runId={run_id}&limit=1000" + (
            f"&cursor={cursor}" if cursor else ""
        )
        page = client.get(url, headers=keys.header("viewer"))
        ids += [a["id"] for a in page.json]
        cursor = page.headers.get("X-Next-Cursor")
    chosen = ids[:4000]
    decided = client.post(
        "/api/v1/approvals/decide",
        json={"ids": chosen, "decision": "approve"},
        headers=keys.header("executor"),
    )
    assert decided.status_code == 200 and decided.json["decided"] == 4000
    _wait_until(
        lambda: _progress(client, keys, workflow["id"], run_id)["progress"]["completed"] == 4000,
        timeout=120,
        state=lambda: _progress(client, keys, workflow["id"], run_id),
    )
    run = _progress(client, keys, workflow["id"], run_id)
    assert run["status"] == "running" and run["progress"]["awaitingApproval"] == 6000
    approved = session.scalars(
        select(RunItem.entity_id).where(RunItem.run_id == run_id, RunItem.status == "completed")
    ).all()
    session.rollback()
    by_approval = {
        a["entityId"]
        for a in client.get(
            f"/api/v1/approvals?runId={run_id}&status=approved&limit=1000",
            headers=keys.header("viewer"),
        ).json
    }
    assert len(approved) == 4000 and set(approved) >= by_approval  # exactly those resumed


def test_two_runs_incrementing_one_counter_end_at_exactly_2000(app, client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1000)
    count = {
        "id": "count",
        "type": "transform",
        "config": {
            "kvIncr": {"stats/seen": 1, "stats/price-total": "{{ entity.data.price }}"},
            "kvSet": {"stats/last": "{{ entity.id }}"},
        },
    }
    workflow = make_workflow(client, keys, entity_type["id"], [count])
    ids = [e["id"] for e in entities]
    first = _run(client, keys, workflow["id"], entityIds=ids)
    second = _run(client, keys, workflow["id"], entityIds=ids)  # at the same time
    for run_id in (first, second):
        assert wait_for_run(client, keys, workflow["id"], run_id)["status"] == "completed"
    seen = client.get("/api/v1/kv/stats/seen", headers=keys.header()).json
    assert seen["value"] == 2000
    total = client.get("/api/v1/kv/stats/price-total", headers=keys.header()).json
    assert total["value"] == 2 * sum(range(1000))
    last = client.get("/api/v1/kv/stats/last", headers=keys.header()).json
    assert last["value"] in set(ids)
    # a dry run writes nothing to the store
    dry = _run(client, keys, workflow["id"], entityIds=ids[:10], dryRun=True)
    wait_for_run(client, keys, workflow["id"], dry)
    assert client.get("/api/v1/kv/stats/seen", headers=keys.header()).json["value"] == 2000


def test_templates_read_the_kv_store(app, client, keys):
    response = client.put(
        "/api/v1/kv/config/suffix", json=" (2026 edition)", headers=keys.header("editor")
    )
    assert response.status_code in (200, 201), response.json
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    step = {
        "id": "name",
        "type": "transform",
        "config": {
            "set": {
                "label": "{{ entity.data.title }}{{ kv('config', 'suffix', '') }}",
                "other": "{{ kv('config', 'missing', 'none') }}",
            }
        },
    }
    workflow = make_workflow(client, keys, entity_type["id"], [step])
    run_id = _run(client, keys, workflow["id"], entityIds=[e["id"] for e in entities])
    assert wait_for_run(client, keys, workflow["id"], run_id)["status"] == "completed"
    stored = client.get(f"/api/v1/entities/{entities[1]['id']}", headers=keys.header()).json
    assert stored["data"]["label"] == "Item 1 (2026 edition)"
    assert stored["data"]["other"] == "none"
