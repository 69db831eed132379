"""Review gates (SPEC 11): the approvals API and the services the engine calls.

The engine's side of a gate (park the item, open its approval) is done here by
:func:`park`, through the same service the engine uses (``open_approvals``), so these
tests pin down the API's contract whatever the engine looks like.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlmodel import Session, col

from app.ids import now_ms
from app.models import Approval, Run, RunItem
from app.services.approvals import expire_approvals, open_approvals
from app.services.runs import insert_run_items
from tests.app.api import assert_error
from tests.conftest import RecordingQueue, auth, make_entities, make_entity_type, make_workflow

APPROVALS = "/api/v1/approvals"
WORKFLOWS = "/api/v1/workflows"


def gate_steps(**gate: Any) -> list[dict[str, Any]]:
    """generate (a transform here), validate, approval, publish."""
    return [
        {"id": "draft", "type": "transform", "config": {"set": {"description": "Nice."}}},
        {
            "id": "check",
            "type": "validate",
            "config": {"rules": [{"field": "title", "required": True}]},
        },
        {"id": "review", "type": "approval", "config": {"instructions": "Check tone", **gate}},
        {"id": "pub", "type": "publish", "config": {}},
    ]


@pytest.fixture
def queue(app):
    """Runs stay where the tests put them: queued tasks are recorded, not run."""
    original = app.extensions["conveyor.queue"]
    recording = RecordingQueue()
    app.extensions["conveyor.queue"] = recording
    yield recording
    app.extensions["conveyor.queue"] = original


def park(
    session: Session, run_id: str, step_id: str = "review", seqs: list[int] | None = None
) -> None:
    """What the engine does at a gate: dispatch if needed, park the items, open approvals."""
    session.expire_all()
    run = session.get(Run, run_id)
    assert run is not None
    if run.status == "pending":
        insert_run_items(session=session, run_id=run_id)
        run.status, run.started_at = "running", now_ms()
    gate = next(i for i, s in enumerate(run.steps) if s["id"] == step_id)
    query = select(RunItem).where(col(RunItem.run_id) == run_id, col(RunItem.status) == "pending")
    if seqs is not None:
        query = query.where(col(RunItem.seq).in_(seqs))
    items = list(session.scalars(query))
    done = [
        {
            "stepId": s["id"],
            "type": s["type"],
            "status": "completed",
            "output": {},
            "error": None,
            "durationMs": 1,
            "attempts": 1,
        }
        for s in run.steps[:gate]
    ]
    for item in items:
        item.status, item.next_step = "awaiting_approval", gate
        item.step_results = [
            *done,
            {
                "stepId": step_id,
                "type": "approval",
                "status": "waiting",
                "output": {"onReject": "fail"},
                "error": None,
                "durationMs": 0,
                "attempts": 1,
            },
        ]
    opened = open_approvals(
        session,
        run=run,
        items=[
            {
                "seq": i.seq,
                "entity_id": i.entity_id,
                "step_id": step_id,
                "preview": {"data": {"description": f"Nice {i.seq}."}},
                "instructions": None,
                "timeout_hours": None,
            }
            for i in items
        ],
    )
    assert opened == len(items)
    session.commit()


def start(client, keys, workflow_id: str, entity_ids: list[str]) -> str:
    response = client.post(
        f"{WORKFLOWS}/{workflow_id}/run",
        json={"entityIds": entity_ids},
        headers=keys.header("executor"),
    )
    assert response.status_code == 202, response.json
    return response.json["runId"]


def setup_gate(client, keys, session, count: int = 6, **gate: Any) -> dict[str, Any]:
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], count)
    workflow = make_workflow(client, keys, entity_type["id"], gate_steps(**gate))
    run_id = start(client, keys, workflow["id"], [e["id"] for e in entities])
    park(session, run_id)
    return {"workflow": workflow, "entities": entities, "run_id": run_id}


def approvals(client, keys, **query: Any) -> list[dict[str, Any]]:
    response = client.get(
        APPROVALS, query_string={"limit": 1000, **query}, headers=keys.header("viewer")
    )
    assert response.status_code == 200, response.json
    return response.json


def run_view(client, keys, workflow_id, run_id) -> dict[str, Any]:
    return client.get(
        f"{WORKFLOWS}/{workflow_id}/runs/{run_id}", headers=keys.header("viewer")
    ).json


def item_rows(session: Session, run_id: str) -> dict[int, RunItem]:
    session.expire_all()
    rows = {i.seq: i for i in session.scalars(select(RunItem).where(col(RunItem.run_id) == run_id))}
    session.commit()  # end the read: on SQLite it holds the write lock the API needs
    return rows


def test_list_get_filters_and_isolation(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=5)
    listed = approvals(client, keys, runId=s["run_id"])
    assert len(listed) == 5
    first = listed[0]
    assert set(first) == {
        "id",
        "runId",
        "workflowId",
        "stepId",
        "entityId",
        "status",
        "preview",
        "instructions",
        "assignees",
        "expiresAt",
        "createdAt",
        "decidedAt",
        "decidedBy",
        "comment",
    }
    assert first["status"] == "pending" and first["stepId"] == "review"
    assert first["workflowId"] == s["workflow"]["id"]
    assert first["instructions"] == "Check tone" and first["decidedAt"] is None
    assert first["preview"] == {"data": {"description": "Nice 0."}}
    assert {a["entityId"] for a in listed} == {e["id"] for e in s["entities"]}
    page = client.get(APPROVALS, query_string={"limit": 2}, headers=keys.header("viewer"))
    assert len(page.json) == 2 and "X-Next-Cursor" in page.headers
    assert approvals(client, keys, workflowId=s["workflow"]["id"], status="pending") == listed
    assert approvals(client, keys, status="approved") == []
    assert approvals(client, keys, runId="run_nope") == []
    assert_error(
        client.get(APPROVALS, query_string={"status": "maybe"}, headers=keys.header()), 422
    )
    one = client.get(f"{APPROVALS}/{first['id']}", headers=keys.header("viewer"))
    assert one.status_code == 200 and one.json == first
    other = auth(keys.other_admin)
    assert_error(client.get(f"{APPROVALS}/{first['id']}", headers=other), 404)
    assert client.get(APPROVALS, headers=other).json == []
    assert_error(client.post(f"{APPROVALS}/{first['id']}/approve", json={}, headers=other), 404)
    assert_error(
        client.post(f"{APPROVALS}/{first['id']}/approve", json={}, headers=keys.header("viewer")),
        403,
    )
    assert_error(client.get(f"{APPROVALS}/apr_nope", headers=keys.header()), 404)
    progress = run_view(client, keys, s["workflow"]["id"], s["run_id"])["progress"]
    assert progress == {
        "total": 5,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "pending": 0,
        "awaitingApproval": 5,
    }
    waiting = client.get(
        f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}/items",
        query_string={"status": "awaiting_approval"},
        headers=keys.header("viewer"),
    )
    assert len(waiting.json) == 5


def test_approve_resumes_the_item_after_the_gate(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=3)
    listed = approvals(client, keys, runId=s["run_id"])
    target = listed[1]
    before_etag = client.get(
        f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}", headers=keys.header("viewer")
    ).headers["ETag"]
    response = client.post(
        f"{APPROVALS}/{target['id']}/approve",
        json={"comment": "Good"},
        headers=keys.header("executor"),
    )
    assert response.status_code == 200, response.json
    decided = response.json
    assert decided["status"] == "approved" and decided["comment"] == "Good"
    assert decided["decidedAt"] is not None
    me = client.get("/api/v1/me", headers=keys.header("executor")).json
    assert decided["decidedBy"] == me["key"]["id"]
    items = item_rows(session, s["run_id"])
    seq = next(i.seq for i in items.values() if i.entity_id == target["entityId"])
    resumed = items[seq]
    assert (resumed.status, resumed.next_step) == ("pending", 3)
    gate = resumed.step_results[-1]
    assert gate["stepId"] == "review" and gate["status"] == "completed"
    assert gate["output"]["decision"] == "approved" and gate["output"]["comment"] == "Good"
    assert [i.status for s2, i in sorted(items.items()) if s2 != seq] == ["awaiting_approval"] * 2
    assert ("jobs.chunks.process_lane", (s["run_id"],)) in queue.tasks
    progress = run_view(client, keys, s["workflow"]["id"], s["run_id"])["progress"]
    assert (progress["pending"], progress["awaitingApproval"]) == (1, 2)
    after = client.get(
        f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}", headers=keys.header("viewer")
    )
    assert after.headers["ETag"] != before_etag  # pollers see the decision
    # Deciding twice is a conflict, whichever way.
    again = client.post(
        f"{APPROVALS}/{target['id']}/approve", json={}, headers=keys.header("executor")
    )
    assert "already approved" in assert_error(again, 409)["message"]
    assert_error(
        client.post(f"{APPROVALS}/{target['id']}/reject", json={}, headers=keys.header()), 409
    )
    assert_error(
        client.post(
            f"{APPROVALS}/{listed[0]['id']}/approve", json={"bogus": 1}, headers=keys.header()
        ),
        422,
    )


def test_reject_fails_the_entity_by_default(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=2)
    listed = approvals(client, keys, runId=s["run_id"])
    for approval in listed:
        response = client.post(
            f"{APPROVALS}/{approval['id']}/reject",
            json={"comment": "Off-brand"},
            headers=keys.header("executor"),
        )
        assert response.status_code == 200 and response.json["status"] == "rejected"
    items = item_rows(session, s["run_id"])
    assert {i.status for i in items.values()} == {"failed"}
    assert all(i.error == "rejected at review gate 'review': Off-brand" for i in items.values())
    assert all(i.step_results[-1]["status"] == "failed" for i in items.values())
    run = run_view(client, keys, s["workflow"]["id"], s["run_id"])
    # Every entity ended: the run is final, and its counts add up.
    assert run["status"] == "failed"
    assert run["progress"] == {
        "total": 2,
        "completed": 0,
        "failed": 2,
        "cancelled": 0,
        "pending": 0,
        "awaitingApproval": 0,
    }


def test_reject_with_on_reject_stop_completes_through_the_engine_path(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=2, onReject="stop")
    target = approvals(client, keys, runId=s["run_id"])[0]
    client.post(f"{APPROVALS}/{target['id']}/reject", json={}, headers=keys.header("executor"))
    items = item_rows(session, s["run_id"])
    stopped = next(i for i in items.values() if i.entity_id == target["entityId"])
    # Past the last step: the engine completes it and writes its changes so far.
    assert (stopped.status, stopped.next_step) == ("pending", 4)
    assert stopped.step_results[-1]["output"]["verdict"] == "rejected"
    assert ("jobs.chunks.process_lane", (s["run_id"],)) in queue.tasks


def test_bulk_decide_by_ids_and_by_filter(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=6)
    listed = approvals(client, keys, runId=s["run_id"])
    ids = [a["id"] for a in listed[:2]]
    decide = f"{APPROVALS}/decide"
    by_ids = client.post(
        decide, json={"ids": ids, "decision": "approve"}, headers=keys.header("executor")
    )
    assert by_ids.status_code == 200 and by_ids.json == {"decided": 2}
    rest = client.post(
        decide,
        json={
            "filter": {"runId": s["run_id"], "stepId": "review"},
            "decision": "reject",
            "comment": "no",
        },
        headers=keys.header("executor"),
    )
    assert rest.json == {"decided": 4}
    again = client.post(
        decide,
        json={"filter": {"runId": s["run_id"]}, "decision": "approve"},
        headers=keys.header("executor"),
    )
    assert again.json == {"decided": 0}
    statuses = sorted(a["status"] for a in approvals(client, keys, runId=s["run_id"]))
    assert statuses == ["approved"] * 2 + ["rejected"] * 4
    items = item_rows(session, s["run_id"])
    assert sorted(i.status for i in items.values()) == ["failed"] * 4 + ["pending"] * 2
    assert_error(
        client.post(
            decide, json={"ids": ["apr_nope"], "decision": "approve"}, headers=keys.header()
        ),
        422,
    )
    assert_error(
        client.post(decide, json={"ids": ids, "decision": "maybe"}, headers=keys.header()), 422
    )
    assert_error(
        client.post(
            decide,
            json={"ids": ids, "filter": {"runId": s["run_id"]}, "decision": "approve"},
            headers=keys.header(),
        ),
        422,
    )
    assert_error(client.post(decide, json={"decision": "approve"}, headers=keys.header()), 422)
    assert_error(
        client.post(
            decide,
            json={"filter": {"runId": "run_nope"}, "decision": "approve"},
            headers=keys.header(),
        ),
        404,
    )
    assert_error(
        client.post(
            decide, json={"ids": ids, "decision": "approve"}, headers=keys.header("viewer")
        ),
        403,
    )


def test_bulk_approval_of_4000_of_10000_waiting_resumes_exactly_those(client, keys, session, queue):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 10_000)
    workflow = make_workflow(client, keys, entity_type["id"], gate_steps())
    run_id = start(client, keys, workflow["id"], [e["id"] for e in entities])
    park(session, run_id)
    ids = [
        a
        for (a,) in session.execute(
            select(col(Approval.id))
            .where(col(Approval.run_id) == run_id)
            .order_by(col(Approval.item_seq))
        )
    ]
    session.commit()
    chosen = ids[::5] + ids[1::5]  # 4,000 spread over the run
    assert len(chosen) == 4000
    response = client.post(
        f"{APPROVALS}/decide",
        json={"ids": chosen, "decision": "approve"},
        headers=keys.header("executor"),
    )
    assert response.json == {"decided": 4000}
    session.expire_all()
    resumed = set(
        session.scalars(
            select(col(RunItem.seq)).where(
                col(RunItem.run_id) == run_id, col(RunItem.status) == "pending"
            )
        )
    )
    session.commit()
    assert resumed == {seq for seq in range(10_000) if seq % 5 in (0, 1)}
    progress = run_view(client, keys, workflow["id"], run_id)["progress"]
    assert (progress["pending"], progress["awaitingApproval"]) == (4000, 6000)
    lanes = [t for t in queue.tasks if t == ("jobs.chunks.process_lane", (run_id,))]
    assert 1 <= len(lanes) <= 16


def _concurrently(app, calls: list[tuple[str, dict[str, Any], dict[str, str]]]) -> list[Any]:
    """POST each (path, body, headers) from its own thread and client, all at once."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def call(index: int) -> None:
        path, body, headers = calls[index]
        client = app.test_client()
        barrier.wait()
        response = client.post(path, json=body, headers=headers)
        results[index] = (response.status_code, response.get_json())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_concurrent_bulk_decisions_decide_each_approval_once(app, client, keys, session, queue):
    s = setup_gate(client, keys, session, count=200)
    body = {"filter": {"runId": s["run_id"], "stepId": "review"}, "decision": "approve"}
    ids = [a["id"] for a in approvals(client, keys, runId=s["run_id"])]
    results = _concurrently(
        app,
        [
            (f"{APPROVALS}/decide", body, keys.header("executor")),
            (f"{APPROVALS}/decide", {"ids": ids, "decision": "reject"}, keys.header("editor")),
        ],
    )
    assert [code for code, _ in results] == [200, 200], results
    assert results[0][1]["decided"] + results[1][1]["decided"] == 200
    decided = approvals(client, keys, runId=s["run_id"])
    assert all(a["status"] in ("approved", "rejected") for a in decided)
    items = item_rows(session, s["run_id"])
    approved = sum(a["status"] == "approved" for a in decided)
    assert sum(i.status == "pending" for i in items.values()) == approved
    assert sum(i.status == "failed" for i in items.values()) == 200 - approved
    session.expire_all()
    run = session.get(Run, s["run_id"])
    session.commit()
    assert run is not None and run.failed == 200 - approved


def test_two_reviewers_approving_one_approval_decide_it_once(app, client, keys, session, queue):
    s = setup_gate(client, keys, session, count=1)
    target = approvals(client, keys, runId=s["run_id"])[0]
    results = _concurrently(
        app,
        [
            (f"{APPROVALS}/{target['id']}/approve", {"comment": "a"}, keys.header("executor")),
            (f"{APPROVALS}/{target['id']}/reject", {"comment": "b"}, keys.header("editor")),
        ],
    )
    assert sorted(code for code, _ in results) == [200, 409], results
    winner = next(body for code, body in results if code == 200)
    final = client.get(f"{APPROVALS}/{target['id']}", headers=keys.header()).json
    assert final["status"] == winner["status"] and final["comment"] == winner["comment"]


def test_cancel_ends_waiting_entities_cancelled(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=4)
    # One entity still queued before the gate, three waiting at it.
    session.execute(
        update(RunItem)
        .where(col(RunItem.run_id) == s["run_id"], col(RunItem.seq) == 0)
        .values(status="pending", next_step=0)
    )
    session.execute(
        update(Approval)
        .where(col(Approval.run_id) == s["run_id"], col(Approval.item_seq) == 0)
        .values(status="approved")
    )
    session.commit()
    url = f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}"
    response = client.post(f"{url}/cancel", headers=keys.header("executor"))
    assert response.status_code == 200, response.json
    run = run_view(client, keys, s["workflow"]["id"], s["run_id"])
    assert run["status"] == "cancelled"
    assert run["progress"] == {
        "total": 4,
        "completed": 0,
        "failed": 0,
        "cancelled": 4,
        "pending": 0,
        "awaitingApproval": 0,
    }
    assert {i.status for i in item_rows(session, s["run_id"]).values()} == {"cancelled"}
    left = approvals(client, keys, runId=s["run_id"], status="expired")
    assert len(left) == 3 and all(a["comment"] == "run cancelled before a decision" for a in left)
    late = client.post(f"{APPROVALS}/{left[0]['id']}/approve", json={}, headers=keys.header())
    assert_error(late, 409)


def test_cancel_hands_waiting_items_with_a_checkpoint_to_a_lane(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=2)
    session.execute(
        update(RunItem)
        .where(col(RunItem.run_id) == s["run_id"], col(RunItem.seq) == 1)
        .values(state={"data": {"title": "Item 1", "description": "Nice."}})
    )
    session.commit()
    url = f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}"
    assert client.post(f"{url}/cancel", headers=keys.header("executor")).status_code == 200
    items = item_rows(session, s["run_id"])
    # The one with changes before the gate goes to a lane, which cancels it keeping them.
    assert (items[0].status, items[1].status) == ("cancelled", "pending")
    run = run_view(client, keys, s["workflow"]["id"], s["run_id"])
    assert run["status"] == "running" and run["progress"]["cancelled"] == 1


def test_timeouts_apply_on_timeout(client, keys, session, queue):
    approve = setup_gate(client, keys, session, count=2, timeoutHours=1, onTimeout="approve")
    reject = setup_gate(client, keys, session, count=2, timeoutHours=2)
    never = setup_gate(client, keys, session, count=1)
    now = now_ms()
    assert expire_approvals(session, queue=queue, now_ms=now) == 0
    assert expire_approvals(session, queue=queue, now_ms=now + 90 * 60_000) == 2
    assert {i.status for i in item_rows(session, approve["run_id"]).values()} == {"pending"}
    assert expire_approvals(session, queue=queue, now_ms=now + 10 * 3_600_000) == 2
    assert {i.status for i in item_rows(session, reject["run_id"]).values()} == {"failed"}
    assert run_view(client, keys, reject["workflow"]["id"], reject["run_id"])["status"] == "failed"
    assert {a["status"] for a in approvals(client, keys, runId=approve["run_id"])} == {"expired"}
    assert approvals(client, keys, runId=never["run_id"])[0]["status"] == "pending"
    assert approvals(client, keys, runId=never["run_id"])[0]["expiresAt"] is None


def test_open_approvals_is_idempotent_per_gate(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=2)
    run = session.get(Run, s["run_id"])
    items = [{"seq": 0, "entity_id": s["entities"][0]["id"], "step_id": "review", "preview": None}]
    assert open_approvals(session, run=run, items=items) == 0  # re-opened after a crash
    session.commit()
    assert session.scalar(select(func.count()).select_from(Approval)) == 2


def test_approval_step_type(client, keys):
    from steps import approval
    from steps.base import Action, EntityState, StepContext

    config = approval.Config().load(
        {"instructions": "Check {{ entity.data.title }}", "timeoutHours": 24}
    )
    assert (config["on_timeout"], config["on_reject"], config["assignees"]) == (
        "reject",
        "fail",
        [],
    )
    ctx = StepContext(
        entity=EntityState("e1", {"title": "Lamp"}, "draft", 1),
        step_id="review",
        step_index=2,
        run={"id": "run_1"},
    )
    result = approval.run(config, ctx)
    assert result.action is Action.WAIT
    assert result.output["instructions"] == "Check Lamp" and result.output["timeoutHours"] == 24
    listed = client.get("/api/v1/step-types", headers=keys.header("viewer")).json
    gate = next(t for t in listed if t["type"] == "approval")
    assert gate.get("category", "review") == "review"
    entity_type = make_entity_type(client, keys)
    bad = client.post(
        WORKFLOWS,
        json={
            "name": "w",
            "entityTypeId": entity_type["id"],
            "steps": [{"id": "r", "type": "approval", "config": {"onReject": "later"}}],
        },
        headers=keys.header("editor"),
    )
    assert "steps[0].config.onReject" in assert_error(bad, 422)["errors"]


def test_approved_entities_continue_on_the_engine(app, client, keys, session):
    """With the real embedded queue: approved entities are published; the rejected fails."""
    from app.models import Workflow
    from app.services.runs import start_run
    from tests.jobs.test_run_engine import wait_for_run

    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], gate_steps())
    run = start_run(
        session=session,
        queue=RecordingQueue(),  # dispatch is ours: park() plays the engine up to the gate
        workflow=session.get(Workflow, workflow["id"]),
        entity_ids=[e["id"] for e in entities],
    )
    park(session, run.id)
    listed = approvals(client, keys, runId=run.id)
    decide = f"{APPROVALS}/decide"
    ids = [a["id"] for a in listed]
    client.post(decide, json={"ids": ids[:2], "decision": "approve"}, headers=keys.header())
    client.post(f"{APPROVALS}/{ids[2]}/reject", json={}, headers=keys.header())
    final = wait_for_run(client, keys, workflow["id"], run.id)
    assert final["progress"] == {
        "total": 3,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "pending": 0,
        "awaitingApproval": 0,
    }
    published = {a["entityId"] for a in listed[:2]}
    for entity in entities:
        stored = client.get(f"/api/v1/entities/{entity['id']}", headers=keys.header()).json
        assert (stored["status"] == "published") == (entity["id"] in published)


def test_deleting_a_finished_run_removes_its_approvals(client, keys, session, queue):
    s = setup_gate(client, keys, session, count=2)
    client.post(
        f"{APPROVALS}/decide",
        json={"filter": {"runId": s["run_id"]}, "decision": "reject"},
        headers=keys.header("executor"),
    )
    url = f"{WORKFLOWS}/{s['workflow']['id']}/runs/{s['run_id']}"
    assert client.get(url, headers=keys.header()).json["status"] == "failed"
    assert client.delete(url, headers=keys.header("editor")).status_code == 204
    assert approvals(client, keys, runId=s["run_id"]) == []
