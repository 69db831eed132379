"""Jobs API (SPEC 6): list, get, logs and cancel of the jobs done for a workspace.

A job is a view of its workflow run: these tests hold the job up against the run at each
stage (pending, running, final), across workspaces, and through its log.
"""

from __future__ import annotations

import dataclasses
from urllib.parse import parse_qs, urlsplit

import pytest

from app.models import Workflow
from app.services.runs import start_run
from jobs import runtime
from jobs.dispatch import dispatch_run
from tests.app.api import assert_error
from tests.conftest import RecordingQueue, auth, make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import STEPS, wait_for_run

JOBS = "/api/v1/jobs"
WORKFLOWS = "/api/v1/workflows"

# price < 2 fails at the gate, with a secret in the error message; the rest is published.
SECRET = "cvk_" + "j0bsS3cr3tK3yValue"
TOKEN = "jobsBearerTokenValue123"
FAILING_STEPS = [
    {"id": "shape", "type": "transform", "config": {"set": {"checked": True}}},
    {
        "id": "gate",
        "type": "validate",
        "config": {
            "rules": [
                {
                    "expression": "entity.data.price >= 2",
                    "message": f"too cheap; key {SECRET} Authorization: Bearer {TOKEN}",
                }
            ]
        },
    },
    {"id": "pub", "type": "publish", "config": {}},
]


def _progress(total, completed=0, failed=0, cancelled=0, pending=0):
    return {
        "total": total,
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "pending": pending,
        "awaitingApproval": 0,
    }


def _setup(client, keys, count, steps=STEPS):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], count)
    workflow = make_workflow(client, keys, entity_type["id"], steps)
    return [e["id"] for e in entities], workflow


def _run_to_the_end(client, keys, workflow_id, entity_ids):
    response = client.post(
        f"{WORKFLOWS}/{workflow_id}/run",
        json={"entityIds": entity_ids},
        headers=keys.header("executor"),
    )
    assert response.status_code == 202, response.json
    return wait_for_run(client, keys, workflow_id, response.json["runId"])


def _pending_run(session, workflow_id, entity_ids):
    """A run stored but never dispatched: its queue only records, so it stays pending."""
    return start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow_id),
        entity_ids=entity_ids,
    )


@pytest.fixture
def running_run(app, session, settings):
    """``start(workflow_id, ids)``: a run dispatched (items written, status running) whose
    chunk jobs only land in a recording queue, so it stays running with nothing done."""

    def start(workflow_id, entity_ids):
        queue = RecordingQueue()
        run = start_run(
            session=session,
            queue=queue,
            workflow=session.get(Workflow, workflow_id),
            entity_ids=entity_ids,
        )
        rt = runtime.Runtime(
            dataclasses.replace(settings), app.extensions["conveyor.engine"], queue
        )
        runtime.install(rt, thread_only=True)
        try:
            dispatch_run(run.id)
        finally:
            runtime.install(None, thread_only=True)  # type: ignore[arg-type]
        return run

    return start


def _job(client, keys, job_id, role="viewer", **headers):
    return client.get(f"{JOBS}/{job_id}", headers={**keys.header(role), **headers})


def _job_ids(client, keys, query=""):
    response = client.get(f"{JOBS}{query}", headers=keys.header("viewer"))
    assert response.status_code == 200, response.json
    return [job["id"] for job in response.json]


# --- GET /jobs: newest first, filtered by type and status ----------------------------------


def test_list_filters_by_status_and_type_across_pending_running_and_final_jobs(
    client, keys, session, running_run
):
    ids, workflow = _setup(client, keys, 4, FAILING_STEPS)
    done = _run_to_the_end(client, keys, workflow["id"], [ids[3]])
    failed = _run_to_the_end(client, keys, workflow["id"], [ids[0]])
    going = running_run(workflow["id"], [ids[2]])
    waiting = _pending_run(session, workflow["id"], [ids[1]])
    assert (done["status"], failed["status"]) == ("completed", "failed")

    newest_first = [waiting.job_id, going.job_id, failed["jobId"], done["jobId"]]
    assert _job_ids(client, keys) == newest_first
    assert _job_ids(client, keys, "?type=workflow_run") == newest_first
    assert _job_ids(client, keys, "?type=export") == []
    assert _job_ids(client, keys, "?status=pending") == [waiting.job_id]
    assert _job_ids(client, keys, "?status=running") == [going.job_id]
    assert _job_ids(client, keys, "?status=failed&type=workflow_run") == [failed["jobId"]]
    assert _job_ids(client, keys, "?status=completed") == [done["jobId"]]
    assert _job_ids(client, keys, "?status=cancelled") == []
    assert_error(client.get(f"{JOBS}?status=finished", headers=keys.header()), 422)

    # Every listed job says what GET /jobs/{id} says.
    listed = client.get(JOBS, headers=keys.header("viewer")).json
    for job in listed:
        assert _job(client, keys, job["id"]).json == job


def test_list_is_cursor_paginated(client, keys):
    ids, workflow = _setup(client, keys, 3)
    runs = [_run_to_the_end(client, keys, workflow["id"], [i]) for i in ids]
    expected = [run["jobId"] for run in reversed(runs)]

    seen = []
    response = client.get(f"{JOBS}?limit=2", headers=keys.header("viewer"))
    while True:
        assert response.status_code == 200, response.json
        assert len(response.json) <= 2
        seen.extend(job["id"] for job in response.json)
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            break
        response = client.get(f"{JOBS}?limit=2&cursor={cursor}", headers=keys.header("viewer"))
    assert seen == expected


# --- GET /jobs/{id}: the run's status and progress, workspace isolation -----------------


def test_job_agrees_with_its_run_pending_running_and_final(client, keys, session, running_run):
    ids, workflow = _setup(client, keys, 3)

    def agree(run_id, job_id):
        run = client.get(
            f"{WORKFLOWS}/{workflow['id']}/runs/{run_id}", headers=keys.header("viewer")
        ).json
        job = _job(client, keys, job_id).json
        assert job["runId"] == run_id and job["workflowId"] == workflow["id"]
        for field in ("status", "progress", "startedAt", "completedAt", "error", "dryRun"):
            assert job[field] == run[field], field
        return job

    pending = _pending_run(session, workflow["id"], ids)
    job = agree(pending.id, pending.job_id)
    assert job["status"] == "pending" and job["startedAt"] is None

    running = running_run(workflow["id"], ids)
    job = agree(running.id, running.job_id)
    assert job["status"] == "running"
    assert job["progress"] == _progress(3, pending=3)
    assert job["startedAt"] is not None and job["completedAt"] is None

    final = _run_to_the_end(client, keys, workflow["id"], ids)
    job = agree(final["id"], final["jobId"])
    assert job["status"] == "completed" and job["progress"]["total"] == 3


def test_another_workspaces_job_is_404_everywhere_and_never_listed(client, keys, session):
    ids, workflow = _setup(client, keys, 2, FAILING_STEPS)
    finished = _run_to_the_end(client, keys, workflow["id"], ids)
    pending = _pending_run(session, workflow["id"], ids)
    stranger = auth(keys.other_admin)

    for job_id in (finished["jobId"], pending.job_id):
        assert_error(client.get(f"{JOBS}/{job_id}", headers=stranger), 404)
        assert_error(client.get(f"{JOBS}/{job_id}/logs", headers=stranger), 404)
        assert_error(client.post(f"{JOBS}/{job_id}/cancel", headers=stranger), 404)
    listed = client.get(JOBS, headers=stranger)
    assert listed.status_code == 200 and listed.json == []

    # The stranger's cancel changed nothing: the pending job is still pending.
    assert _job(client, keys, pending.job_id).json["status"] == "pending"


def test_jobs_need_a_key_and_cancel_needs_an_executor(client, keys, session):
    ids, workflow = _setup(client, keys, 1)
    run = _pending_run(session, workflow["id"], ids)
    assert_error(client.get(JOBS), 401)
    assert_error(client.get(f"{JOBS}/{run.job_id}"), 401)
    assert_error(client.get(f"{JOBS}/{run.job_id}", headers=auth("cvk_not_a_key")), 401)
    assert_error(client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("viewer")), 403)
    assert _job(client, keys, run.job_id).json["status"] == "pending"


# --- ETag / If-None-Match and Retry-After ------------------------------------------------


def test_unfinished_job_hints_retry_after_and_answers_304_until_it_changes(
    client, keys, session, running_run
):
    ids, workflow = _setup(client, keys, 2)
    for run in (_pending_run(session, workflow["id"], ids), running_run(workflow["id"], ids)):
        first = _job(client, keys, run.job_id)
        assert first.status_code == 200
        assert first.json["status"] in ("pending", "running")
        assert int(first.headers["Retry-After"]) > 0
        etag = first.headers["ETag"]

        same = _job(client, keys, run.job_id, **{"If-None-Match": etag})
        assert same.status_code == 304 and same.get_data() == b""
        assert same.headers["ETag"] == etag and "Retry-After" in same.headers

        cancel = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))
        assert cancel.status_code == 200, cancel.json
        changed = _job(client, keys, run.job_id, **{"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["ETag"] != etag
        assert changed.json["status"] == "cancelled"
        assert "Retry-After" not in changed.headers

        final = _job(client, keys, run.job_id, **{"If-None-Match": changed.headers["ETag"]})
        assert final.status_code == 304


# --- POST /jobs/{id}/cancel: the same as cancelling the run -------------------------------


def test_cancelling_a_running_job_cancels_its_run(client, keys, running_run):
    ids, workflow = _setup(client, keys, 3)
    run = running_run(workflow["id"], ids)

    response = client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor"))

    assert response.status_code == 200, response.json
    job = response.json
    assert job["id"] == run.job_id and job["status"] == "cancelled"
    assert job["progress"] == _progress(3, cancelled=3)
    detail = client.get(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}", headers=keys.header("viewer")
    ).json
    assert detail["status"] == "cancelled"
    assert detail["progress"] == job["progress"]
    assert detail["completedAt"] == job["completedAt"] is not None
    items = client.get(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}/items", headers=keys.header("viewer")
    ).json
    assert sorted(i["entityId"] for i in items) == sorted(ids)
    assert {i["status"] for i in items} == {"cancelled"}
    # Cancelled through the run now is cancelled twice: a conflict, as through the job.
    again = client.post(
        f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}/cancel", headers=keys.header("executor")
    )
    assert_error(again, 409)
    assert_error(client.post(f"{JOBS}/{run.job_id}/cancel", headers=keys.header("executor")), 409)


# --- GET /jobs/{id}/logs: cursor pages, failed entities, secrets redacted -----------------


def test_logs_page_by_cursor_and_show_each_failed_entity_with_secrets_redacted(client, keys):
    ids, workflow = _setup(client, keys, 4, FAILING_STEPS)  # prices 0..3: two fail
    run = _run_to_the_end(client, keys, workflow["id"], ids)
    assert run["status"] == "failed"
    assert run["progress"] == _progress(4, completed=2, failed=2)
    url = f"{JOBS}/{run['jobId']}/logs"

    pages = []
    response = client.get(f"{url}?limit=1", headers=keys.header("viewer"))
    while True:
        assert response.status_code == 200, response.json
        assert len(response.json) == 1
        pages.append(response.json)
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            break
        link = response.headers["Link"]
        next_url = urlsplit(link[1 : link.index(">")])
        assert next_url.path == url
        assert parse_qs(next_url.query) == {"limit": ["1"], "cursor": [cursor]}
        response = client.get(f"{next_url.path}?{next_url.query}", headers=keys.header("viewer"))
    lines = [line for page in pages for line in page]
    assert len(lines) >= 4  # started, two failures, finished
    assert [line["id"] for line in lines] == sorted({line["id"] for line in lines})
    whole = client.get(f"{url}?limit=1000", headers=keys.header("viewer")).json
    assert whole == lines

    errors = [line for line in lines if line["level"] == "error"]
    assert sorted((e["entityId"], e["stepId"]) for e in errors) == sorted(
        [(ids[0], "gate"), (ids[1], "gate")]
    )
    for error in errors:
        assert "too cheap" in error["message"]
        assert "[REDACTED]" in error["message"]
    text = repr(lines)
    assert SECRET not in text and TOKEN not in text


def test_a_pending_job_has_an_empty_log_and_a_bad_cursor_is_422(client, keys, session):
    ids, workflow = _setup(client, keys, 1)
    run = _pending_run(session, workflow["id"], ids)
    response = client.get(f"{JOBS}/{run.job_id}/logs", headers=keys.header("viewer"))
    assert response.status_code == 200 and "X-Next-Cursor" not in response.headers
    assert all(line["level"] != "error" for line in response.json)
    bad = client.get(f"{JOBS}/{run.job_id}/logs?cursor=%%%", headers=keys.header("viewer"))
    assert_error(bad, 422)
