"""Audit log (SPEC 12): every write through the API leaves exactly one entry, failures none.

The cases below are checked against the OpenAPI document: a write operation added to the
API without a case here fails :func:`test_every_write_endpoint_leaves_exactly_one_entry`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from app.ids import now_ms
from tests.app.api import assert_error
from tests.app.api.test_approvals import gate_steps, park
from tests.conftest import RecordingQueue, auth, make_entities, make_entity_type, make_workflow
from tests.peers import new_webhook_secret

AUDIT = "/api/v1/audit"
WRITE_METHODS = ("post", "put", "patch", "delete")
# POSTs that store nothing (an unsaved draft from the LLM), so they leave no entry; validate,
# the other one, is a case below.
STORES_NOTHING = {"POST /api/v1/workflows/generate"}
SECRET = new_webhook_secret()
ROTATED = new_webhook_secret()


@pytest.fixture
def queue(app):
    """Runs stay pending: the cases cancel, retry and delete them at will."""
    original = app.extensions["conveyor.queue"]
    recording = RecordingQueue()
    app.extensions["conveyor.queue"] = recording
    yield recording
    app.extensions["conveyor.queue"] = original


def write_operations(client) -> set[str]:
    """``"POST /api/v1/workflows/{workflow_id}/run"``, … from the OpenAPI document."""
    spec = client.get("/api/v1/openapi.json").json
    return {
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method in operations
        if method in WRITE_METHODS
    }


def entries(client, keys, **query: Any) -> list[dict[str, Any]]:
    response = client.get(AUDIT, query_string={"limit": 1000, **query}, headers=keys.header())
    assert response.status_code == 200, response.json
    return response.json


class Case:
    """One write: its request, the entry it must leave, and what to remember from it."""

    def __init__(
        self,
        operation: str,
        action: str | None,
        body: Any = None,
        *,
        role: str = "editor",
        query: dict[str, Any] | None = None,
        resource: str | None = None,
        remember: str | None = None,
        check: Callable[[dict[str, Any]], None] | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.operation, self.action, self.body, self.role = operation, action, body, role
        self.query, self.resource, self.remember, self.check, self.raw = (
            query,
            resource,
            remember,
            check,
            raw,
        )


def shape(operation: str) -> str:
    """An operation with its path parameters unnamed: ``POST /workflows/{}/run``."""
    return re.sub(r"\{\w+\}", "{}", operation)


def fill(template: str, ids: dict[str, Any]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: str(ids[m.group(1)]), template)


def seed(client, keys, session) -> dict[str, Any]:
    """A workspace with a type, entities, an active gated workflow, a run at its gate."""
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 3)
    workflow = make_workflow(client, keys, entity_type["id"], gate_steps(), status="active")
    run = client.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header("executor"),
    ).json
    park(session, run["runId"])
    approval_ids = [
        a["id"]
        for a in client.get(
            "/api/v1/approvals", query_string={"runId": run["runId"]}, headers=keys.header()
        ).json
    ]
    return {
        "type": entity_type["id"],
        "entities": [e["id"] for e in entities],
        "wf": workflow["id"],
        "approvals": approval_ids,
    }


def cases(seeded: dict[str, Any]) -> list[Case]:
    """Every write operation, in an order where each finds what it needs."""
    workflow_body = {
        "name": "Spare workflow",
        "entityTypeId": seeded["type"],
        "steps": [{"id": "t", "type": "transform", "config": {"set": {"x": 1}}}],
    }
    return [
        Case(
            "POST /api/v1/api-keys",
            "api_key.created",
            {"name": "ci", "role": "viewer"},
            role="admin",
            remember="key_id",
        ),
        Case(
            "DELETE /api/v1/api-keys/{key_id}", "api_key.revoked", role="admin", resource="key_id"
        ),
        Case(
            "POST /api/v1/entity-types",
            "entity_type.created",
            {"name": "Spare", "schema": {"type": "object"}},
            remember="type_id",
        ),
        Case(
            "PATCH /api/v1/entity-types/{type_id}",
            "entity_type.updated",
            {"description": "x"},
            resource="type_id",
            check=lambda e: assert_equal(e["details"]["fields"], ["description"]),
        ),
        Case(
            "POST /api/v1/entities",
            "entity.created",
            {"entityTypeId": seeded["type"], "data": {"title": "One"}},
            remember="entity_id",
        ),
        Case(
            "POST /api/v1/entities/bulk",
            "entity.bulk_created",
            {
                "entities": [
                    {"entityTypeId": seeded["type"], "data": {"title": f"B{i}"}} for i in range(5)
                ]
            },
            check=lambda e: assert_equal(e["details"]["count"], 5),
        ),
        Case(
            "PATCH /api/v1/entities/{entity_id}",
            "entity.updated",
            {"data": {"title": "Two"}},
            resource="entity_id",
        ),
        Case("DELETE /api/v1/entities/{entity_id}", "entity.deleted", resource="entity_id"),
        Case("DELETE /api/v1/entity-types/{type_id}", "entity_type.deleted", resource="type_id"),
        Case("POST /api/v1/workflows", "workflow.created", workflow_body, remember="workflow_id"),
        Case(
            "PATCH /api/v1/workflows/{workflow_id}",
            "workflow.updated",
            {"description": "d"},
            resource="workflow_id",
        ),
        Case(
            "POST /api/v1/workflows/{workflow_id}/duplicate",
            "workflow.duplicated",
            {},
            resource="workflow_id",
            check=lambda e: assert_true(e["details"]["createdId"].startswith("wf")),
        ),
        Case(
            "POST /api/v1/workflows/{workflow_id}/revisions/{version}/restore",
            "workflow.restored",
            resource="workflow_id",
        ),
        Case("POST /api/v1/workflows/import", "workflow.imported", raw=b"", remember="imported_id"),
        Case("POST /api/v1/workflows/validate", None, workflow_body, role="viewer"),
        Case("DELETE /api/v1/workflows/{workflow_id}", "workflow.deleted", resource="workflow_id"),
        Case(
            "POST /api/v1/credentials",
            "credential.created",
            {"name": "hook", "type": "webhook", "data": {"secret": SECRET}},
            remember="credential_id",
        ),
        Case(
            "PUT /api/v1/credentials/{credential_id}",
            "credential.rotated",
            {"name": "hook", "data": {"secret": ROTATED}},
            resource="credential_id",
        ),
        Case(
            "POST /api/v1/credentials/{credential_id}/test",
            "credential.tested",
            {},
            resource="credential_id",
        ),
        Case(
            "DELETE /api/v1/credentials/{credential_id}",
            "credential.deleted",
            resource="credential_id",
        ),
        Case(
            "POST /api/v1/workflows/{wf}/run",
            "run.started",
            {"entityIds": seeded["entities"][:1]},
            role="executor",
            remember="run_id",
            check=lambda e: assert_equal(
                e["details"], {"workflowId": seeded["wf"], "total": 1, "dryRun": False}
            ),
        ),
        Case(
            "POST /api/v1/workflows/{wf}/runs/{run_id}/cancel",
            "run.cancelled",
            role="executor",
            resource="run_id",
        ),
        Case(
            "POST /api/v1/workflows/{wf}/runs/{run_id}/retry",
            "run.retried",
            role="executor",
            resource="run_id",
            remember="retry_id",
        ),
        Case(
            "POST /api/v1/jobs/{job_id}/cancel", "job.cancelled", role="executor", resource="job_id"
        ),
        Case("DELETE /api/v1/workflows/{wf}/runs/{run_id}", "run.deleted", resource="run_id"),
        Case(
            "DELETE /api/v1/workflows/{wf}/runs",
            "run.deleted",
            query={"before": now_ms() + 60_000},
            check=lambda e: assert_equal(e["details"]["workflowId"], seeded["wf"]),
        ),
        Case(
            "POST /api/v1/triggers",
            "trigger.created",
            {"workflowId": seeded["wf"], "type": "webhook"},
            remember="trigger_id",
        ),
        Case(
            "PATCH /api/v1/triggers/{trigger_id}",
            "trigger.updated",
            {"enabled": True},
            resource="trigger_id",
        ),
        Case(
            "POST /api/v1/webhooks/{trigger_id}",
            "webhook.fired",
            {"entityIds": seeded["entities"][:1]},
            role="executor",
            resource="trigger_id",
        ),
        Case("DELETE /api/v1/triggers/{trigger_id}", "trigger.deleted", resource="trigger_id"),
        Case(
            "POST /api/v1/approvals/{approval_id}/approve",
            "approval.approved",
            {"comment": "ok"},
            role="executor",
            resource="approval_id",
        ),
        Case("POST /api/v1/approvals/{reject_id}/reject", "approval.rejected", {}, role="executor"),
        Case(
            "POST /api/v1/approvals/decide",
            "approval.decided",
            {"ids": seeded["approvals"][2:], "decision": "approve"},
            role="executor",
            check=lambda e: assert_equal(e["details"]["decided"], 1),
        ),
        Case(
            "PUT /api/v1/kv/{namespace}/{key}",
            "kv_entry.set",
            {"secret-ish": SECRET},
            resource="kv_ref",
        ),
        Case("DELETE /api/v1/kv/{namespace}/{key}", "kv_entry.deleted", resource="kv_ref"),
    ]


def assert_equal(a: Any, b: Any) -> None:
    assert a == b


def assert_true(value: Any) -> None:
    assert value


def _request(client, keys, case: Case, ids: dict[str, Any]):
    method, template = case.operation.split(" ", 1)
    path = fill(template, ids)
    headers = keys.header(case.role)
    if case.raw is not None:
        document = client.get(f"/api/v1/workflows/{ids['workflow_id']}/export", headers=headers)
        return client.post(
            path, data=document.data, headers={**headers, "Content-Type": "application/json"}
        )
    kwargs: dict[str, Any] = {"headers": headers, "query_string": case.query}
    if case.body is not None:
        kwargs["json"] = case.body
    return client.open(path, method=method, **kwargs)


def test_every_write_endpoint_leaves_exactly_one_entry(client, keys, session, queue):
    seeded = seed(client, keys, session)
    all_cases = cases(seeded)
    covered = {shape(c.operation) for c in all_cases} | STORES_NOTHING
    assert covered == {shape(op) for op in write_operations(client)}, "write without a case"
    ids: dict[str, Any] = {
        "wf": seeded["wf"],
        "version": 1,
        "approval_id": seeded["approvals"][0],
        "reject_id": seeded["approvals"][1],
        "namespace": "settings",
        "key": "tone",
        "kv_ref": "settings/tone",
    }
    seen = len(entries(client, keys))
    for case in all_cases:
        response = _request(client, keys, case, ids)
        assert response.status_code < 300, (case.operation, response.get_json())
        after = entries(client, keys)
        expected = 0 if case.action is None else 1
        assert len(after) == seen + expected, (case.operation, after[: len(after) - seen])
        seen = len(after)
        if case.action is None:
            continue
        entry = after[0]
        assert entry["action"] == case.action, case.operation
        me = client.get("/api/v1/me", headers=keys.header(case.role)).json["key"]
        assert entry["actor"] == {
            "keyId": me["id"],
            "keyPrefix": me["keyPrefix"],
            "role": case.role,
        }
        if case.remember == "run_id" or case.remember == "retry_id":
            body = response.get_json()
            ids[case.remember] = body["runId"]
            if case.remember == "retry_id":
                ids["job_id"] = body["jobId"]
        elif case.remember is not None:
            ids[case.remember] = response.get_json()["id"]
        if case.remember is not None and case.remember not in ("run_id", "retry_id"):
            assert entry["resourceId"] == ids[case.remember], case.operation
        if case.resource is not None:
            assert entry["resourceId"] == ids[case.resource], case.operation
        if case.check is not None:
            case.check(entry)
    # Nothing secret in any entry: not a credential's data, not a new key, not a KV value.
    dumped = json.dumps(entries(client, keys))
    assert SECRET not in dumped and ROTATED not in dumped
    assert "cvk_" not in dumped.replace('"keyPrefix": "cvk_', "")


def test_failed_writes_leave_no_entry(client, keys, session, queue):
    seed(client, keys, session)
    before = entries(client, keys)
    for operation in sorted(write_operations(client)):
        method, template = operation.split(" ", 1)
        if template.endswith(("/validate", "/generate")):
            continue
        path = re.sub(
            r"\{(\w+)\}", lambda m: "999" if m.group(1) == "version" else "nope", template
        )
        path = path.replace("/kv/nope/nope", "/kv/bad%20ns/key")
        low = client.open(path, method=method.upper(), json={}, headers=keys.header("viewer"))
        assert low.status_code == 403 or low.status_code == 404, (operation, low.status_code)
        wrong = client.open(path, method=method.upper(), json={"bogus": 1}, headers=keys.header())
        assert 400 <= wrong.status_code < 500, (operation, wrong.status_code, wrong.get_json())
    # Webhook refused (its trigger's workflow is not active): recorded as a trigger event only.
    assert entries(client, keys) == before


def test_entry_commits_or_rolls_back_with_its_write(client, keys, monkeypatch):
    from app.services import kv

    def broken(**_kw: Any) -> Any:
        raise RuntimeError("crash after the write, before the commit")

    monkeypatch.setattr(kv, "get_kv", broken)
    response = client.put("/api/v1/kv/ns/k", json=1, headers=keys.header("editor"))
    assert response.status_code == 500
    monkeypatch.undo()
    assert_error(client.get("/api/v1/kv/ns/k", headers=keys.header()), 404)
    assert entries(client, keys) == []


def test_filters_pagination_roles_and_read_only(client, keys):
    for i in range(3):
        client.put(f"/api/v1/kv/ns/k{i}", json=i, headers=keys.header("editor"))
    cut = now_ms()
    client.put("/api/v1/kv/ns/late", json=1, headers=keys.header("admin"))
    client.delete("/api/v1/kv/ns/k0", headers=keys.header("editor"))
    everything = entries(client, keys)
    assert [e["action"] for e in everything][:2] == ["kv_entry.deleted", "kv_entry.set"]
    assert len(everything) == 5
    assert set(everything[0]) == {
        "id",
        "at",
        "actor",
        "action",
        "resourceType",
        "resourceId",
        "details",
    }
    assert [e["resourceId"] for e in entries(client, keys, resourceId="ns/k0")] == ["ns/k0"] * 2
    assert len(entries(client, keys, action="kv_entry.set")) == 4
    assert len(entries(client, keys, resourceType="kv_entry")) == 5
    assert entries(client, keys, resourceType="workflow") == []
    admin_id = client.get("/api/v1/me", headers=keys.header("admin")).json["key"]["id"]
    assert [e["resourceId"] for e in entries(client, keys, actorKeyId=admin_id)] == ["ns/late"]
    assert {e["resourceId"] for e in entries(client, keys, since=cut)} >= {"ns/late", "ns/k0"}
    assert all(e["at"] >= cut for e in entries(client, keys, since=cut))
    first = client.get(AUDIT, query_string={"limit": 2}, headers=keys.header())
    assert len(first.json) == 2 and 'rel="next"' in first.headers["Link"]
    rest = client.get(
        AUDIT,
        query_string={"limit": 10, "cursor": first.headers["X-Next-Cursor"]},
        headers=keys.header(),
    )
    assert [e["id"] for e in first.json + rest.json] == [e["id"] for e in everything]
    assert_error(client.get(AUDIT, headers=keys.header("editor")), 403)
    assert_error(client.get(AUDIT), 401)
    assert_error(client.get(AUDIT, query_string={"since": "soon"}, headers=keys.header()), 422)
    assert client.get(AUDIT, headers=auth(keys.other_admin)).json == []
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert client.open(AUDIT, method=method, json={}, headers=keys.header()).status_code == 405
        assert client.open(
            f"{AUDIT}/{everything[0]['id']}", method=method, headers=keys.header()
        ).status_code in (404, 405)
    assert len(entries(client, keys)) == 5
