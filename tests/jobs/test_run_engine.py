"""The run engine on the embedded default: in-process queue, SQLite (or PostgreSQL)."""

from __future__ import annotations

import dataclasses
import time

import pytest
from sqlalchemy import select, update

from app.models import Run, RunItem, Workflow
from app.services.runs import start_run
from jobs import chunks, runtime
from jobs.checkpoint import Checkpointer
from jobs.claims import claim_items
from jobs.dispatch import dispatch_run
from jobs.sweeper import sweep
from steps.base import SideEffect
from steps.pipeline import run_step, side_effect_of
from tests.conftest import RecordingQueue, make_entities, make_entity_type, make_workflow
from tests.peers import WebhookReceiver

STEPS = [
    {
        "id": "shape",
        "type": "transform",
        "config": {"set": {"slug": "{{ entity.data.title | lower | replace(' ', '-') }}"}},
    },
    {
        "id": "check",
        "type": "validate",
        "config": {"rules": [{"field": "price", "required": True}]},
    },
    {"id": "cheap", "type": "condition", "config": {"if": "entity.data.price < 5", "then": "stop"}},
    {"id": "pub", "type": "publish", "config": {}},
]


def wait_for_run(client, keys, workflow_id, run_id, timeout=30.0):
    """Poll the run until it is final (the embedded queue runs it in threads)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(
            f"/api/v1/workflows/{workflow_id}/runs/{run_id}", headers=keys.header("viewer")
        ).json
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    pytest.fail(f"run {run_id} did not finish: {run}")


def test_run_completes_with_exact_progress(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 20)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header("executor"),
    )
    assert response.status_code == 202, response.json
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert run["status"] == "completed"
    assert run["progress"] == {
        "total": 20,
        "completed": 20,
        "failed": 0,
        "cancelled": 0,
        "pending": 0,
        "awaitingApproval": 0,
    }
    items = client.get(
        f"/api/v1/workflows/{workflow['id']}/runs/{run['id']}/items?limit=100",
        headers=keys.header("viewer"),
    ).json
    assert len(items) == 20
    published = [i for i in items if [s["stepId"] for s in i["steps"]][-1:] == ["pub"]]
    assert len(published) == 15  # price 0..4 stop at the condition
    entity = client.get(f"/api/v1/entities/{entities[10]['id']}", headers=keys.header()).json
    assert entity["status"] == "published" and entity["publishedVersion"] == entity["version"] == 2
    assert entity["data"]["slug"] == "item-10"
    workflow_now = client.get(f"/api/v1/workflows/{workflow['id']}", headers=keys.header()).json
    assert workflow_now["lastRunAt"] == run["completedAt"]


@pytest.fixture
def jobs_here(app, session, settings):
    """Start runs whose jobs the test runs itself, in this thread: ``start(workflow_id, ids,
    **settings)`` creates and dispatches the run and returns it with its runtime."""

    def start(workflow_id: str, ids: list[str], **changes) -> tuple[Run, runtime.Runtime]:
        queue = RecordingQueue()
        workflow = session.get(Workflow, workflow_id)
        run = start_run(session=session, queue=queue, workflow=workflow, entity_ids=ids)
        rt = runtime.Runtime(
            dataclasses.replace(settings, **changes), app.extensions["conveyor.engine"], queue
        )
        runtime.install(rt, thread_only=True)
        dispatch_run(run.id)
        return run, rt

    yield start
    runtime.install(None, thread_only=True)  # type: ignore[arg-type]


def crash_before(rt: runtime.Runtime, run_id: str, step: dict) -> None:
    """A worker claims the items, runs the pure steps before ``step`` (a side effect), saves
    them as its checkpointer does (with the ``started`` marker an at-most-once step gets),
    and dies; its lease runs out and the sweeper frees the items."""
    claim = claim_items(rt, run_id, "crashed-lane", rt.settings.chunk_size)
    checkpointer = Checkpointer(rt, run_id, claim.job_id, claim.token)
    checkpointer.hold(claim.items)
    for item in claim.items:
        while claim.info.steps[item.progress.next_step]["id"] != step["id"]:
            run_step(item.progress, claim.info)
        if side_effect_of(step["type"]) is SideEffect.AT_MOST_ONCE:
            item.progress.records.append(chunks.started_marker(step))
        checkpointer.save(item)
    assert checkpointer.close()
    with rt.session() as session:
        session.execute(update(RunItem).where(RunItem.run_id == run_id).values(lease_expires_at=0))
        session.commit()
    assert sweep(rt)["released"] == len(claim.items)


def test_claims_take_a_chunk_at_most_and_honour_concurrency(client, keys, session, jobs_here):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 300)]
    created = make_workflow(client, keys, entity_type["id"], STEPS, settings={"concurrency": 120})
    run, rt = jobs_here(created["id"], ids, chunk_size=50)
    sizes = []
    while (claim := claim_items(rt, run.id, "lane", rt.settings.chunk_size)) is not None:
        if claim.full:  # 120 in flight: the concurrency
            break
        sizes.append(len(claim.items))
    assert sizes == [50, 50, 20]  # 120 in flight: the concurrency
    claimed = session.scalars(
        select(RunItem.seq).where(RunItem.run_id == run.id, RunItem.status == "running")
    ).all()
    session.rollback()
    assert sorted(claimed) == list(range(120))  # in selection order


def test_an_entity_resumed_after_a_crash_does_not_repeat_finished_steps(
    client, keys, session, jobs_here
):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 10)]
    steps = [STEPS[0], {"id": "pub", "type": "publish", "config": {}}]
    created = make_workflow(client, keys, entity_type["id"], steps)
    run, rt = jobs_here(created["id"], ids)
    crash_before(rt, run.id, steps[1])
    saved = session.scalars(
        select(RunItem).where(RunItem.run_id == run.id).order_by(RunItem.seq)
    ).all()
    assert {(i.status, i.next_step) for i in saved} == {("pending", 1)}
    # publish is idempotent (one webhook-id): no "started" marker, it is simply sent again
    assert [r["status"] for r in saved[0].step_results] == ["completed"]
    for item in saved:  # mark the checkpoint, to see whether the transform runs again
        item.state = {**item.state, "data": {**item.state["data"], "slug": "checkpointed"}}
    session.commit()
    chunks.process_lane(run.id)
    finished = client.get(
        f"/api/v1/workflows/{created['id']}/runs/{run.id}", headers=keys.header()
    ).json
    assert finished["status"] == "completed" and finished["progress"]["completed"] == 10
    items = client.get(
        f"/api/v1/workflows/{created['id']}/runs/{run.id}/items", headers=keys.header()
    ).json
    assert {i["attempts"] for i in items} == {2}
    assert [[s["stepId"] for s in i["steps"]] for i in items] == [["shape", "pub"]] * 10
    for entity_id in ids:
        entity = client.get(f"/api/v1/entities/{entity_id}", headers=keys.header()).json
        # Published once, from the checkpoint: the transform did not run again.
        assert entity["data"]["slug"] == "checkpointed"
        assert entity["status"] == "published" and entity["version"] == 2


def test_a_notification_interrupted_by_a_crash_is_not_sent_again(client, keys, session, jobs_here):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 5)]
    with WebhookReceiver() as receiver:
        notify = {
            "id": "tell",
            "type": "notify",
            "config": {"channel": "webhook", "url": receiver.url, "message": "hi"},
        }
        created = make_workflow(client, keys, entity_type["id"], [STEPS[0], notify])
        run, rt = jobs_here(created["id"], ids, outbound_allow_hosts=("127.0.0.1",))
        crash_before(rt, run.id, notify)  # it may or may not have gone out: at most once
        chunks.process_lane(run.id)
        assert receiver.deliveries == []
    items = client.get(
        f"/api/v1/workflows/{created['id']}/runs/{run.id}/items", headers=keys.header()
    ).json
    assert len(items) == 5
    for item in items:
        assert item["status"] == "completed"
        told = item["steps"][-1]
        assert told["stepId"] == "tell"
        assert told["output"] == {"channel": "webhook", "delivered": None}
        assert "not re-sent" in told["error"]


def test_a_poisoned_entity_fails_alone_with_its_real_error(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 19, tag="blue")
    lacking = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"title": "No tag", "price": 1}},
        headers=keys.header("editor"),
    ).json
    deep: dict = {"leaf": 1}
    for _ in range(600):
        deep = {"d": deep}
    nested = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"title": "Deep", "price": 2}},
        headers=keys.header("editor"),
    ).json
    # the API refuses 600 levels of JSON, so the nesting is stored the way a migration would
    from app.models import Entity

    with client.application.app_context():
        from sqlmodel import Session

        with Session(client.application.extensions["conveyor.engine"]) as session:
            row = session.get(Entity, nested["id"])
            row.data = {"title": "Deep", "price": 2, "deep": deep}
            session.add(row)
            session.commit()
    steps = [
        {"id": "tags", "type": "transform", "config": {"set": {"tags": "{{ [entity.data.tag] }}"}}}
    ]
    workflow = make_workflow(client, keys, entity_type["id"], steps)
    ids = [e["id"] for e in entities] + [lacking["id"], nested["id"]]
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/run", json={"entityIds": ids}, headers=keys.header()
    )
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert run["progress"]["completed"] == 19 and run["progress"]["failed"] == 2
    items = client.get(
        f"/api/v1/workflows/{workflow['id']}/runs/{run['id']}/items?status=failed",
        headers=keys.header(),
    ).json
    errors = {i["entityId"]: i["error"] for i in items}
    assert set(errors) == {lacking["id"], nested["id"]}
    assert "tag" in errors[lacking["id"]] and "undefined" in errors[lacking["id"]]
    assert "timed out" not in errors[nested["id"]]


def test_the_sweeper_quarantines_an_entity_that_lost_its_worker_three_times(
    client, keys, session, jobs_here
):
    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 3)]
    created = make_workflow(client, keys, entity_type["id"], STEPS)
    run, rt = jobs_here(created["id"], ids)
    for lost in range(1, 4):  # claimed, and the worker dies: the lease runs out
        claim = claim_items(rt, run.id, f"lane-{lost}", 10)
        assert claim is not None and len(claim.items) == 3
        with rt.session() as s:
            s.execute(update(RunItem).where(RunItem.run_id == run.id).values(lease_expires_at=0))
            s.commit()
        stats = sweep(rt)
        assert stats["quarantined"] == (3 if lost == 3 else 0)
    items = client.get(
        f"/api/v1/workflows/{created['id']}/runs/{run.id}/items", headers=keys.header()
    ).json
    assert {i["status"] for i in items} == {"failed"}
    assert {i["error"] for i in items} == {
        "quarantined: worker lost 3 times while running step shape"
    }
    finished = client.get(
        f"/api/v1/workflows/{created['id']}/runs/{run.id}", headers=keys.header()
    ).json
    assert finished["status"] == "failed" and finished["progress"]["failed"] == 3


def test_a_catastrophic_regex_finishes_in_a_worker_while_another_workspace_runs_on(client, keys):
    """RE2 runs user regexes in linear time: ``^(a+)+$`` over 50 a's and a ``!`` (which
    Python's ``re`` would take hours over) fails its entities at once, and another
    workspace's run started alongside completes."""
    from tests.bounded import finishes_within

    entity_type = make_entity_type(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 20, code="a" * 50 + "!")]
    rule = {"field": "code", "pattern": "^(a+)+$"}
    check = {"id": "check", "type": "validate", "config": {"rules": [rule]}}
    workflow = make_workflow(client, keys, entity_type["id"], [check])
    other = {"Authorization": f"Bearer {keys.other_admin}"}
    other_type = client.post(
        "/api/v1/entity-types", json={"name": "Other", "schema": {"type": "object"}}, headers=other
    ).json
    other_ids = [
        e["id"]
        for e in client.post(
            "/api/v1/entities/bulk",
            json={
                "entities": [
                    {"entityTypeId": other_type["id"], "data": {"n": i}} for i in range(50)
                ]
            },
            headers=other,
        ).json
    ]
    other_workflow = client.post(
        "/api/v1/workflows",
        json={
            "name": "Other",
            "entityTypeId": other_type["id"],
            "steps": [
                {"id": "t", "type": "transform", "config": {"set": {"m": "{{ entity.data.n }}"}}}
            ],
        },
        headers=other,
    ).json
    with finishes_within(30):
        slow = client.post(
            f"/api/v1/workflows/{workflow['id']}/run",
            json={"entityIds": ids},
            headers=keys.header(),
        ).json["runId"]
        fast = client.post(
            f"/api/v1/workflows/{other_workflow['id']}/run",
            json={"entityIds": other_ids},
            headers=other,
        ).json["runId"]
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            done = client.get(
                f"/api/v1/workflows/{other_workflow['id']}/runs/{fast}", headers=other
            ).json
            if done["status"] == "completed":
                break
            time.sleep(0.05)
        assert done["status"] == "completed" and done["progress"]["completed"] == 50
        run = wait_for_run(client, keys, workflow["id"], slow)
    assert run["progress"]["failed"] == 20  # the code does not match: validation fails


@pytest.mark.parametrize("keep", [False, True])
def test_a_failed_entity_keeps_its_stored_data_unless_partial_changes_are_kept(client, keys, keep):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 4)
    steps = [
        {"id": "mark", "type": "transform", "config": {"status": "processing"}},
        {
            "id": "check",
            "type": "validate",
            "config": {"rules": [{"field": "missing", "required": True}]},
        },
    ]
    workflow = make_workflow(
        client, keys, entity_type["id"], steps, settings={"keepPartialChanges": keep}
    )
    response = client.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header(),
    )
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert run["progress"]["failed"] == 4
    for entity in entities:
        stored = client.get(f"/api/v1/entities/{entity['id']}", headers=keys.header()).json
        if keep:
            assert stored["status"] == "processing" and stored["version"] == 2
        else:  # the default: a failed entity is left as it was
            assert stored["status"] == "draft" and stored["version"] == 1
