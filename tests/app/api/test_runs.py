"""Runs and Jobs API (SPEC 5 and 6): start, watch, inspect, cancel and retry runs."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from app.models import Workflow
from app.services.runs import start_run
from tests.app.api import assert_error
from tests.conftest import RecordingQueue, auth, make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import STEPS, wait_for_run

WORKFLOWS = "/api/v1/workflows"
JOBS = "/api/v1/jobs"

# price < 2 fails at the condition; everything else is published.
FAILING_STEPS = [
    {"id": "shape", "type": "transform", "config": {"set": {"checked": True}}},
    {"id": "gate", "type": "condition", "config": {"if": "entity.data.price < 2", "then": "fail"}},
    {"id": "pub", "type": "publish", "config": {}},
]

JOB_KEYS = {
    "id",
    "dryRun",
    "type",
    "status",
    "progress",
    "runId",
    "workflowId",
    "error",
    "createdAt",
    "startedAt",
    "completedAt",
}


def _progress(total, completed=0, failed=0, cancelled=0, pending=0):
    return {
        "total": total,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "pending": pending,
        "awaitingApproval": 0,
    }


def _start(client, keys, workflow_id, body, role="executor", **headers):
    return client.post(
        f"{WORKFLOWS}/{workflow_id}/run", json=body, headers={**keys.header(role), **headers}
    )


def _run_over(client, keys, workflow_id, entity_ids):
    """Start a run over ``entity_ids`` and wait until it is final."""
    response = _start(client, keys, workflow_id, {"entityIds": entity_ids})
    assert response.status_code == 202, response.json
    return wait_for_run(client, keys, workflow_id, response.json["runId"])


def _get_run(client, keys, workflow_id, run_id, role="viewer"):
    return client.get(f"{WORKFLOWS}/{workflow_id}/runs/{run_id}", headers=keys.header(role))


def _runs(client, keys, workflow_id, query=""):
    response = client.get(f"{WORKFLOWS}/{workflow_id}/runs{query}", headers=keys.header("viewer"))
    assert response.status_code == 200, response.json
    return response.json


def _items(client, keys, workflow_id, run_id, query=""):
    response = client.get(
        f"{WORKFLOWS}/{workflow_id}/runs/{run_id}/items{query}", headers=keys.header("viewer")
    )
    assert response.status_code == 200, response.json
    return response.json


def _all_logs(client, keys, job_id):
    response = client.get(f"{JOBS}/{job_id}/logs?limit=1000", headers=keys.header("viewer"))
    assert response.status_code == 200, response.json
    assert "X-Next-Cursor" not in response.headers
    return response.json


def _pending_run(session, workflow_id, entity_ids):
    """A run stored but never dispatched (its queue only records), so it stays pending."""
    return start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow_id),
        entity_ids=entity_ids,
    )


def _failing_setup(client, keys, count=5, **workflow_kw):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], count)
    workflow = make_workflow(client, keys, entity_type["id"], FAILING_STEPS, **workflow_kw)
    return entity_type, entities, workflow


# --- starting a run: the selection is checked -------------------------------------------


def test_unknown_ids_are_422_listing_exactly_them_and_no_run_is_created(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    unknown = ["ent_does_not_exist_1", "ent_does_not_exist_2"]
    ids = [entities[0]["id"], unknown[0], entities[1]["id"], unknown[1]]

    body = assert_error(_start(client, keys, workflow["id"], {"entityIds": ids}), 422)

    assert body["errors"]["entityIds"] == unknown
    assert _runs(client, keys, workflow["id"]) == []
    jobs = client.get(JOBS, headers=keys.header("viewer")).json
    assert jobs == []


def test_ids_of_another_type_or_workspace_are_422_listing_exactly_them(client, keys):
    product = make_entity_type(client, keys)
    article = make_entity_type(client, keys, name="Article")
    products = make_entities(client, keys, product["id"], 2)
    articles = make_entities(client, keys, article["id"], 2)
    other_type = client.post(
        "/api/v1/entity-types",
        json={"name": "Product", "schema": {"type": "object"}},
        headers=auth(keys.other_admin),
    ).json
    foreign = client.post(
        "/api/v1/entities",
        json={"entityTypeId": other_type["id"], "data": {"title": "Theirs"}},
        headers=auth(keys.other_admin),
    ).json
    workflow = make_workflow(client, keys, product["id"], STEPS)
    offending = [articles[1]["id"], foreign["id"], articles[0]["id"]]
    ids = [products[0]["id"], offending[0], offending[1], products[1]["id"], offending[2]]

    body = assert_error(_start(client, keys, workflow["id"], {"entityIds": ids}), 422)

    assert body["errors"]["entityIds"] == offending
    assert _runs(client, keys, workflow["id"]) == []


def test_run_body_needs_exactly_one_selection(client, keys):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    assert_error(_start(client, keys, workflow["id"], {}), 422)
    assert_error(_start(client, keys, workflow["id"], {"entityIds": [], "filter": {}}), 422)
    assert _runs(client, keys, workflow["id"]) == []


def test_archived_workflow_cannot_be_run(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS, status="archived")
    response = _start(client, keys, workflow["id"], {"entityIds": [entities[0]["id"]]})
    assert_error(response, 409)
    assert _runs(client, keys, workflow["id"]) == []


def test_unknown_workflow_is_404(client, keys):
    assert_error(_start(client, keys, "wf_unknown", {"entityIds": []}), 404)
    response = client.get(f"{WORKFLOWS}/wf_unknown/runs", headers=keys.header("viewer"))
    assert_error(response, 404)


# --- a run to the end: run, job, items ----------------------------------------------------


def test_run_finishes_with_exact_progress_and_its_job_agrees(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 12)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)

    response = _start(client, keys, workflow["id"], {"entityIds": [e["id"] for e in entities]})

    assert response.status_code == 202, response.json
    assert set(response.json) == {"jobId", "runId"}
    job_id, run_id = response.json["jobId"], response.json["runId"]
    run = wait_for_run(client, keys, workflow["id"], run_id)
    assert run["id"] == run_id and run["jobId"] == job_id
    assert run["workflowId"] == workflow["id"]
    assert run["workflowVersion"] == workflow["version"]
    assert run["status"] == "completed"
    assert run["progress"] == _progress(12, completed=12)
    assert run["trigger"]["type"] == "manual"
    assert run["retryOf"] is None
    assert run["createdAt"] <= run["startedAt"] <= run["completedAt"]

    job = client.get(f"{JOBS}/{job_id}", headers=keys.header("viewer"))
    assert job.status_code == 200, job.json
    assert set(job.json) == JOB_KEYS
    assert job.json["id"] == job_id
    assert job.json["type"] == "workflow_run"
    assert job.json["runId"] == run_id and job.json["workflowId"] == workflow["id"]
    assert job.json["status"] == run["status"]
    assert job.json["progress"] == run["progress"]
    assert job.json["startedAt"] == run["startedAt"]
    assert job.json["completedAt"] == run["completedAt"]
    assert job.json["error"] is None

    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [run_id]
    listed = client.get(f"{JOBS}?type=workflow_run", headers=keys.header("viewer")).json
    assert listed == [job.json]
    workflow_now = client.get(f"{WORKFLOWS}/{workflow['id']}", headers=keys.header()).json
    assert workflow_now["lastRunAt"] == run["completedAt"]


def test_runs_and_jobs_lists_are_newest_first_and_filter_by_status(client, keys):
    entity_type, entities, workflow = _failing_setup(client, keys, count=4)
    ok = _run_over(client, keys, workflow["id"], [entities[3]["id"]])
    bad = _run_over(client, keys, workflow["id"], [entities[0]["id"]])
    assert (ok["status"], bad["status"]) == ("completed", "failed")

    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [bad["id"], ok["id"]]
    assert [r["id"] for r in _runs(client, keys, workflow["id"], "?status=failed")] == [bad["id"]]
    completed = _runs(client, keys, workflow["id"], "?status=completed")
    assert [r["id"] for r in completed] == [ok["id"]]
    assert _runs(client, keys, workflow["id"], "?status=running") == []
    assert_error(
        client.get(f"{WORKFLOWS}/{workflow['id']}/runs?status=bogus", headers=keys.header()), 422
    )

    def job_ids(query):
        response = client.get(f"{JOBS}{query}", headers=keys.header("viewer"))
        assert response.status_code == 200, response.json
        return [j["id"] for j in response.json]

    assert job_ids("") == [bad["jobId"], ok["jobId"]]
    assert job_ids("?status=failed") == [bad["jobId"]]
    assert job_ids("?status=completed&type=workflow_run") == [ok["jobId"]]
    assert job_ids("?type=something_else") == []
    assert_error(client.get(f"{JOBS}?status=bogus", headers=keys.header()), 422)


def test_filter_selection_runs_exactly_the_matching_entities(client, keys):
    entity_type = make_entity_type(client, keys)
    items = [
        {
            "entityTypeId": entity_type["id"],
            "data": {"title": f"Item {i}", "price": 10 + i},
            "status": "ready" if i % 2 else "draft",
        }
        for i in range(6)
    ]
    created = client.post(
        "/api/v1/entities/bulk", json={"entities": items}, headers=keys.header("editor")
    ).json
    other_type = make_entity_type(client, keys, name="Article")
    make_entities(client, keys, other_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    ready = {e["id"] for e in created if e["status"] == "ready"}

    response = _start(client, keys, workflow["id"], {"filter": {"status": "ready"}})
    assert response.status_code == 202, response.json
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])

    assert run["status"] == "completed"
    assert run["progress"] == _progress(3, completed=3)
    ran = _items(client, keys, workflow["id"], run["id"])
    assert {i["entityId"] for i in ran} == ready

    by_ids = [created[0]["id"], created[1]["id"]]
    response = _start(
        client, keys, workflow["id"], {"filter": {"ids": by_ids, "status": "published"}}
    )
    assert response.status_code == 202, response.json
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    # created[1] was published by the first run; created[0] is still a draft.
    assert run["progress"] == _progress(1, completed=1)
    assert [i["entityId"] for i in _items(client, keys, workflow["id"], run["id"])] == [
        created[1]["id"]
    ]


def test_filter_by_updated_since(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    patched = client.patch(
        f"/api/v1/entities/{entities[1]['id']}",
        json={"status": "touched"},
        headers=keys.header("editor"),
    ).json
    since = patched["updatedAt"]
    newer = [e for e in entities if e["updatedAt"] >= since] + [patched]

    response = _start(client, keys, workflow["id"], {"filter": {"updatedSince": since}})
    assert response.status_code == 202, response.json
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])

    expected = {e["id"] for e in newer}
    assert run["progress"]["total"] == len(expected)
    assert {i["entityId"] for i in _items(client, keys, workflow["id"], run["id"])} == expected


def test_empty_selection_is_a_run_that_completes_at_once(client, keys):
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)

    for body in ({"filter": {"status": "nothing-has-this"}}, {"entityIds": []}):
        response = _start(client, keys, workflow["id"], body)
        assert response.status_code == 202, response.json
        run = _get_run(client, keys, workflow["id"], response.json["runId"]).json
        assert run["status"] == "completed"
        assert run["progress"] == _progress(0)
        job = client.get(f"{JOBS}/{response.json['jobId']}", headers=keys.header()).json
        assert job["status"] == "completed" and job["progress"] == _progress(0)


def test_idempotency_key_replays_the_first_run(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    body = {"entityIds": [e["id"] for e in entities]}

    first = _start(client, keys, workflow["id"], body, **{"Idempotency-Key": "run-once"})
    second = _start(client, keys, workflow["id"], body, **{"Idempotency-Key": "run-once"})

    assert first.status_code == second.status_code == 202
    assert second.json == first.json
    other_body = {"entityIds": [entities[0]["id"]]}
    reused = _start(client, keys, workflow["id"], other_body, **{"Idempotency-Key": "run-once"})
    assert_error(reused, 422)  # the same key with another body (README)
    wait_for_run(client, keys, workflow["id"], first.json["runId"])
    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [first.json["runId"]]


def test_input_is_kept_on_the_run(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    body = {"entityIds": [entities[0]["id"]], "input": {"source": "test", "n": [1, 2]}}
    response = _start(client, keys, workflow["id"], body)
    assert response.status_code == 202, response.json
    run = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert run["input"] == {"source": "test", "n": [1, 2]}


def test_items_show_each_step_for_a_stopped_and_a_published_entity(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 8)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    cheap, dear = entities[2], entities[7]
    run = _run_over(client, keys, workflow["id"], [cheap["id"], dear["id"]])
    assert run["progress"] == _progress(2, completed=2)

    items = {i["entityId"]: i for i in _items(client, keys, workflow["id"], run["id"])}
    assert set(items) == {cheap["id"], dear["id"]}
    for item in items.values():
        assert item["status"] == "completed"
        assert item["error"] is None
        assert item["attempts"] >= 1
        assert item["startedAt"] is not None and item["completedAt"] >= item["startedAt"]
        for step in item["steps"]:
            assert set(step) == {
                "stepId",
                "type",
                "status",
                "output",
                "error",
                "durationMs",
                "attempts",
            }
            assert step["error"] is None
            assert isinstance(step["durationMs"], int) and step["durationMs"] >= 0

    stopped = items[cheap["id"]]["steps"]
    assert [(s["stepId"], s["type"]) for s in stopped] == [
        ("shape", "transform"),
        ("check", "validate"),
        ("cheap", "condition"),
    ]
    assert stopped[1]["output"] == {"valid": True, "errors": []}
    assert stopped[2]["output"] == {"result": True, "action": "stop"}

    published = items[dear["id"]]["steps"]
    assert [(s["stepId"], s["type"]) for s in published] == [
        ("shape", "transform"),
        ("check", "validate"),
        ("cheap", "condition"),
        ("pub", "publish"),
    ]
    assert published[2]["output"] == {"result": False, "action": "continue"}
    assert published[3]["output"]["publishedVersion"] == 2

    assert _items(client, keys, workflow["id"], run["id"], "?status=failed") == []
    completed = _items(client, keys, workflow["id"], run["id"], "?status=completed")
    assert {i["entityId"] for i in completed} == set(items)
    assert_error(
        client.get(
            f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}/items?status=bogus",
            headers=keys.header(),
        ),
        422,
    )


def test_items_are_paginated_in_selection_order(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 5)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    ids = [e["id"] for e in reversed(entities)]
    run = _run_over(client, keys, workflow["id"], ids)

    url = f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}/items?limit=2"
    seen = []
    while url:
        response = client.get(url, headers=keys.header("viewer"))
        assert response.status_code == 200, response.json
        seen += [i["entityId"] for i in response.json]
        cursor = response.headers.get("X-Next-Cursor")
        url = (
            f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}/items?limit=2&cursor={cursor}"
            if cursor
            else None
        )
    assert seen == ids


# --- failures: tolerated percentage, logs -------------------------------------------------


def test_failures_within_the_tolerated_percentage_complete_the_run(client, keys):
    # 2 of 5 fail: 40% <= 40%.
    _, entities, workflow = _failing_setup(
        client, keys, settings={"toleratedFailurePercentage": 40}
    )
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert run["status"] == "completed"
    assert run["progress"] == _progress(5, completed=3, failed=2)
    job = client.get(f"{JOBS}/{run['jobId']}", headers=keys.header()).json
    assert job["status"] == "completed" and job["progress"] == run["progress"]


def test_failures_over_the_tolerated_percentage_fail_the_run(client, keys):
    # 2 of 5 fail: 40% > 39%.
    _, entities, workflow = _failing_setup(
        client, keys, settings={"toleratedFailurePercentage": 39}
    )
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert run["status"] == "failed"
    assert run["progress"] == _progress(5, completed=3, failed=2)
    job = client.get(f"{JOBS}/{run['jobId']}", headers=keys.header()).json
    assert job["status"] == "failed" and job["progress"] == run["progress"]


def test_default_tolerance_is_zero(client, keys):
    _, entities, workflow = _failing_setup(client, keys)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert run["status"] == "failed"
    assert run["progress"] == _progress(5, completed=3, failed=2)


def test_failed_items_name_the_failing_step(client, keys):
    _, entities, workflow = _failing_setup(client, keys, count=3)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])

    failed = _items(client, keys, workflow["id"], run["id"], "?status=failed")
    assert {i["entityId"] for i in failed} == {entities[0]["id"], entities[1]["id"]}
    for item in failed:
        assert item["error"]
        assert [s["stepId"] for s in item["steps"]] == ["shape", "gate"]
        assert item["steps"][0]["status"] == "completed"
        gate = item["steps"][1]
        assert gate["status"] == "failed"
        assert gate["error"]
        assert gate["output"] == {"result": True, "action": "fail"}
    completed = _items(client, keys, workflow["id"], run["id"], "?status=completed")
    assert [i["entityId"] for i in completed] == [entities[2]["id"]]


def test_job_logs_have_an_error_line_per_failed_entity(client, keys):
    _, entities, workflow = _failing_setup(client, keys, count=6)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert run["progress"] == _progress(6, completed=4, failed=2)

    logs = _all_logs(client, keys, run["jobId"])
    for line in logs:
        assert {"timestamp", "level", "entityId", "stepId", "message"} <= set(line)
        assert isinstance(line["timestamp"], int)
    errors = [line for line in logs if line["level"] == "error"]
    assert sorted((e["entityId"], e["stepId"]) for e in errors) == sorted(
        [(entities[0]["id"], "gate"), (entities[1]["id"], "gate")]
    )
    assert all(e["message"] for e in errors)


def test_job_logs_are_cursor_paginated_without_duplicates(client, keys):
    _, entities, workflow = _failing_setup(client, keys, count=5)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    everything = _all_logs(client, keys, run["jobId"])
    assert len(everything) >= 4  # started, two errors, finished

    pages = []
    response = client.get(f"{JOBS}/{run['jobId']}/logs?limit=2", headers=keys.header("viewer"))
    while True:
        assert response.status_code == 200, response.json
        assert len(response.json) <= 2
        pages.append(response.json)
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            assert "Link" not in response.headers
            break
        link = response.headers["Link"]
        assert link.endswith('>; rel="next"')
        next_url = urlsplit(link[1 : link.index(">")])
        assert next_url.path == f"{JOBS}/{run['jobId']}/logs"
        assert parse_qs(next_url.query) == {"limit": ["2"], "cursor": [cursor]}
        response = client.get(f"{next_url.path}?{next_url.query}", headers=keys.header("viewer"))

    assert all(len(page) == 2 for page in pages[:-1])
    flat = [line for page in pages for line in page]
    assert flat == everything
    assert len({line["id"] for line in flat}) == len(flat)


def test_bad_log_cursor_is_422(client, keys):
    _, entities, workflow = _failing_setup(client, keys, count=1)
    run = _run_over(client, keys, workflow["id"], [entities[0]["id"]])
    response = client.get(f"{JOBS}/{run['jobId']}/logs?cursor=%%%", headers=keys.header())
    assert_error(response, 422)


def test_job_logs_redact_secrets(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    secret = "cvk_" + "s3cr3tS3cr3tS3cr3t"
    token = "abcDEF123tokenvalue"
    steps = [
        {
            "id": "check",
            "type": "validate",
            "config": {
                "rules": [
                    {
                        "expression": "entity.data.price > 100",
                        "message": f"key {secret} with Authorization: Bearer {token}",
                    }
                ]
            },
        }
    ]
    workflow = make_workflow(client, keys, entity_type["id"], steps)
    run = _run_over(client, keys, workflow["id"], [entities[0]["id"]])
    assert run["status"] == "failed"

    logs = _all_logs(client, keys, run["jobId"])
    errors = [line for line in logs if line["level"] == "error"]
    assert len(errors) == 1 and errors[0]["stepId"] == "check"
    text = repr(logs)
    assert secret not in text
    assert token not in text
    assert "[REDACTED]" in errors[0]["message"]


# --- polling: ETag / If-None-Match, Retry-After ------------------------------------------


def test_etag_on_a_final_run_and_its_job_gives_304(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    run_url = f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}"
    job_url = f"{JOBS}/{run['jobId']}"

    for url in (run_url, job_url):
        first = client.get(url, headers=keys.header("viewer"))
        assert first.status_code == 200
        etag = first.headers["ETag"]
        assert etag
        assert "Retry-After" not in first.headers
        again = client.get(url, headers={**keys.header("viewer"), "If-None-Match": etag})
        assert again.status_code == 304
        assert again.get_data() == b""
        assert again.headers["ETag"] == etag
        stale = client.get(url, headers={**keys.header("viewer"), "If-None-Match": '"other"'})
        assert stale.status_code == 200
        assert stale.json == first.json


def test_pending_run_hints_retry_after_and_its_etag_changes_on_cancel(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _pending_run(session, workflow["id"], [e["id"] for e in entities])
    run_url = f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}"

    before = client.get(run_url, headers=keys.header("viewer"))
    assert before.json["status"] == "pending"
    assert before.json["progress"] == _progress(2, pending=2)
    assert "Retry-After" in before.headers
    job = client.get(f"{JOBS}/{run.job_id}", headers=keys.header("viewer"))
    assert job.json["status"] == "pending" and "Retry-After" in job.headers

    cancel = client.post(f"{run_url}/cancel", headers=keys.header("executor"))
    assert cancel.status_code == 200, cancel.json

    after = client.get(
        run_url, headers={**keys.header("viewer"), "If-None-Match": before.headers["ETag"]}
    )
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.json["status"] == "cancelled"


# --- cancel ----------------------------------------------------------------------------


def test_cancel_through_the_jobs_api_returns_the_job(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _pending_run(session, workflow["id"], [e["id"] for e in entities])

    response = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))

    assert response.status_code == 200, response.json
    job = response.json
    assert set(job) == JOB_KEYS
    assert job["id"] == run.job_id and job["type"] == "workflow_run"
    assert job["runId"] == run.id and job["workflowId"] == workflow["id"]
    assert job["status"] == "cancelled"
    assert job["progress"] == _progress(3, cancelled=3)
    detail = _get_run(client, keys, workflow["id"], run.id).json
    assert detail["status"] == "cancelled"
    assert detail["progress"] == job["progress"]
    assert detail["completedAt"] is not None
    assert client.get(f"{JOBS}/{run.job_id}", headers=keys.header()).json == job

    again = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))
    assert_error(again, 409)


def test_cancel_through_the_runs_api_returns_the_run(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _pending_run(session, workflow["id"], [e["id"] for e in entities])

    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}/cancel", headers=keys.header("executor")
    )

    assert response.status_code == 200, response.json
    assert response.json["id"] == run.id
    assert response.json["status"] == "cancelled"
    assert response.json["progress"] == _progress(2, cancelled=2)
    entity = client.get(f"/api/v1/entities/{entities[0]['id']}", headers=keys.header()).json
    assert entity["status"] == "draft" and entity["version"] == 1  # never started


def test_items_of_a_run_cancelled_before_dispatch_list_every_entity_as_cancelled(
    client, keys, session
):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _pending_run(session, workflow["id"], [e["id"] for e in entities])
    cancel = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))
    assert cancel.json["progress"] == _progress(3, cancelled=3)

    cancelled = _items(client, keys, workflow["id"], run.id, "?status=cancelled")

    # SPEC 5: items are "per entity", and the counts of a cancelled run add up.
    assert {i["entityId"] for i in cancelled} == {e["id"] for e in entities}
    assert len(cancelled) == cancel.json["progress"]["cancelled"]


def test_cancel_of_a_final_run_is_409(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])

    assert_error(client.post(f"{JOBS}/{run['jobId']}/cancel", headers=keys.header("executor")), 409)
    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}/cancel", headers=keys.header("executor")
    )
    assert_error(response, 409)
    after = _get_run(client, keys, workflow["id"], run["id"]).json
    assert after["status"] == "completed"
    assert after["progress"] == run["progress"]


def test_cancel_of_an_unknown_job_or_run_is_404(client, keys):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    assert_error(client.post(f"{JOBS}/job_unknown/cancel", headers=keys.header("executor")), 404)
    assert_error(client.get(f"{JOBS}/job_unknown", headers=keys.header()), 404)
    assert_error(client.get(f"{JOBS}/job_unknown/logs", headers=keys.header()), 404)
    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/run_unknown/cancel", headers=keys.header("executor")
    )
    assert_error(response, 404)
    assert_error(_get_run(client, keys, workflow["id"], "run_unknown"), 404)


def test_run_is_404_under_another_workflow(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    other = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _run_over(client, keys, workflow["id"], [entities[0]["id"]])
    assert_error(_get_run(client, keys, other["id"], run["id"]), 404)
    response = client.get(
        f"{WORKFLOWS}/{other['id']}/runs/{run['id']}/items", headers=keys.header()
    )
    assert_error(response, 404)


# --- retry -----------------------------------------------------------------------------


def test_retry_runs_only_the_failed_entities_in_a_new_linked_run(client, keys):
    _, entities, workflow = _failing_setup(client, keys, count=5)
    first = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert first["progress"] == _progress(5, completed=3, failed=2)
    failed_ids = [entities[0]["id"], entities[1]["id"]]
    for entity_id in failed_ids:  # fix the data so the retry succeeds
        fixed = client.patch(
            f"/api/v1/entities/{entity_id}",
            json={"data": {"title": "Fixed", "price": 50}},
            headers=keys.header("editor"),
        )
        assert fixed.status_code == 200, fixed.json
    untouched = client.get(f"/api/v1/entities/{entities[4]['id']}", headers=keys.header()).json

    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{first['id']}/retry", headers=keys.header("executor")
    )

    assert response.status_code == 202, response.json
    assert set(response.json) == {"jobId", "runId"}
    assert response.json["runId"] != first["id"]
    retry = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert retry["retryOf"] == first["id"]
    assert retry["jobId"] == response.json["jobId"]
    assert (
        retry["progress"]["total"] == first["progress"]["failed"] + first["progress"]["cancelled"]
    )
    assert retry["status"] == "completed"
    assert retry["progress"] == _progress(2, completed=2)
    ran = _items(client, keys, workflow["id"], retry["id"])
    assert [i["entityId"] for i in ran] == failed_ids
    again = client.get(f"/api/v1/entities/{entities[4]['id']}", headers=keys.header()).json
    assert again["version"] == untouched["version"]
    original = _get_run(client, keys, workflow["id"], first["id"]).json
    assert original["status"] == "failed" and original["progress"] == first["progress"]
    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [retry["id"], first["id"]]


def test_retry_of_a_run_cancelled_before_dispatch_reruns_its_whole_selection(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    ids = [e["id"] for e in entities]
    run = _pending_run(session, workflow["id"], ids)
    cancel = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))
    assert cancel.json["progress"] == _progress(3, cancelled=3)

    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}/retry", headers=keys.header("executor")
    )

    assert response.status_code == 202, response.json
    retry = wait_for_run(client, keys, workflow["id"], response.json["runId"])
    assert retry["retryOf"] == run.id
    assert retry["progress"] == _progress(3, completed=3)
    assert [i["entityId"] for i in _items(client, keys, workflow["id"], retry["id"])] == ids


def test_retry_with_nothing_to_retry_is_an_empty_completed_run(client, keys):
    # SPEC is silent; the code starts a new, empty run (an empty selection completes at once).
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    assert run["progress"]["failed"] == 0

    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}/retry", headers=keys.header("executor")
    )

    assert response.status_code == 202, response.json
    retry = _get_run(client, keys, workflow["id"], response.json["runId"]).json
    assert retry["retryOf"] == run["id"]
    assert retry["status"] == "completed"
    assert retry["progress"] == _progress(0)


def test_retry_of_an_unfinished_run_is_409(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _pending_run(session, workflow["id"], [entities[0]["id"]])
    response = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}/retry", headers=keys.header("executor")
    )
    assert_error(response, 409)
    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [run.id]


# --- roles and workspaces --------------------------------------------------------------


def test_viewer_cannot_run_cancel_or_retry(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    body = {"entityIds": [entities[0]["id"]]}

    assert_error(_start(client, keys, workflow["id"], body, role="viewer"), 403)
    assert _runs(client, keys, workflow["id"]) == []

    run = _pending_run(session, workflow["id"], [entities[0]["id"]])
    run_url = f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}"
    assert_error(client.post(f"{run_url}/cancel", headers=keys.header("viewer")), 403)
    assert_error(client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("viewer")), 403)
    assert_error(client.post(f"{run_url}/retry", headers=keys.header("viewer")), 403)
    assert _get_run(client, keys, workflow["id"], run.id).json["status"] == "pending"

    for role in ("executor", "editor", "admin"):
        response = _start(client, keys, workflow["id"], body, role=role)
        assert response.status_code == 202, (role, response.json)
        wait_for_run(client, keys, workflow["id"], response.json["runId"])


def test_missing_key_is_401(client, keys):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    assert_error(client.post(f"{WORKFLOWS}/{workflow['id']}/run", json={"entityIds": []}), 401)
    assert_error(client.get(JOBS), 401)


def test_another_workspace_cannot_see_or_touch_the_run(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 2)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = _run_over(client, keys, workflow["id"], [e["id"] for e in entities])
    other = auth(keys.other_admin)
    run_url = f"{WORKFLOWS}/{workflow['id']}/runs/{run['id']}"

    assert_error(client.get(run_url, headers=other), 404)
    assert_error(client.get(f"{run_url}/items", headers=other), 404)
    assert_error(client.post(f"{run_url}/cancel", headers=other), 404)
    assert_error(client.post(f"{run_url}/retry", headers=other), 404)
    assert_error(client.get(f"{WORKFLOWS}/{workflow['id']}/runs", headers=other), 404)
    body = {"entityIds": [e["id"] for e in entities]}
    response = client.post(f"{WORKFLOWS}/{workflow['id']}/run", json=body, headers=other)
    assert_error(response, 404)
    assert_error(client.get(f"{JOBS}/{run['jobId']}", headers=other), 404)
    assert_error(client.get(f"{JOBS}/{run['jobId']}/logs", headers=other), 404)
    assert_error(client.post(f"{JOBS}/{run['jobId']}/cancel", headers=other), 404)
    listed = client.get(JOBS, headers=other)
    assert listed.status_code == 200 and listed.json == []

    assert [r["id"] for r in _runs(client, keys, workflow["id"])] == [run["id"]]


def test_malformed_entity_ids_name_their_positions(client, keys):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    body = assert_error(_start(client, keys, workflow["id"], {"entityIds": ["ok", 3, ""]}), 422)
    assert set(body["errors"]) == {"entityIds[1]", "entityIds[2]"}
    body = assert_error(_start(client, keys, workflow["id"], {"entityIds": "ent_1"}), 422)
    assert set(body["errors"]) == {"entityIds"}
