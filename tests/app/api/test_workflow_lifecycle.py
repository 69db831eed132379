"""Workflow lifecycle (SPEC 10): revisions, diff, restore, duplicate, export/import/validate,
run history clean-up and step-type categories."""

from __future__ import annotations

import json
import threading

import jsonpatch
import yaml
from sqlmodel import select

from app.models import Job, JobLog, Run, RunItem, Workflow, WorkflowRevision
from app.services.runs import purge_old_runs, start_run
from tests.app.api import assert_error
from tests.conftest import (
    PRODUCT_SCHEMA,
    RecordingQueue,
    auth,
    make_entities,
    make_entity_type,
    make_workflow,
)
from tests.jobs.test_run_engine import wait_for_run

WORKFLOWS = "/api/v1/workflows"

STEPS_V1 = [
    {"id": "mark", "type": "transform", "config": {"set": {"edition": "first"}}},
    {
        "id": "check",
        "type": "validate",
        "config": {"rules": [{"field": "title", "required": True, "minLength": 1}]},
    },
    {"id": "ship", "type": "publish", "name": "Publish", "config": {}},
]
STEPS_V2 = [{**STEPS_V1[0], "config": {"set": {"edition": "second"}}}, *STEPS_V1[1:]]
SETTINGS = {
    "concurrency": 7,
    "toleratedFailurePercentage": 12.5,
    "retry": {"maxAttempts": 2, "backoffSeconds": 0.5},
    "entityTimeoutSeconds": 45,
}


def _key(client, key):
    """``(id, keyPrefix)`` of an API key, from ``GET /me``."""
    body = client.get("/api/v1/me", headers=auth(key)).json["key"]
    return body["id"], body["keyPrefix"]


def _setup(client, keys, **kw):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(
        client, keys, entity_type["id"], STEPS_V1, description="Ship them", **kw
    )
    return entity_type, workflow


def _patch(client, keys, workflow_id, body, role="editor"):
    return client.patch(f"{WORKFLOWS}/{workflow_id}", json=body, headers=keys.header(role))


def _revisions(client, keys, workflow_id, query=""):
    response = client.get(
        f"{WORKFLOWS}/{workflow_id}/revisions{query}", headers=keys.header("viewer")
    )
    assert response.status_code == 200, response.json
    return response


# --- revisions ---------------------------------------------------------------------------


def test_every_save_keeps_a_revision_with_its_actor_and_changes(client, keys):
    _, workflow = _setup(client, keys)
    wf = workflow["id"]
    assert _patch(client, keys, wf, {"steps": STEPS_V2}).status_code == 200
    response = _patch(client, keys, wf, {"name": "Renamed", "status": "active"}, role="admin")
    assert response.json["version"] == 3

    revisions = _revisions(client, keys, wf).json
    assert [r["version"] for r in revisions] == [3, 2, 1]
    assert revisions[0]["changes"] == ["name", "status"]
    assert revisions[1]["changes"] == ["steps"]
    assert revisions[2]["changes"] == [
        "name",
        "description",
        "status",
        "entityTypeId",
        "steps",
        "settings",
    ]
    editor_id, editor_prefix = _key(client, keys.editor)
    admin_id, admin_prefix = _key(client, keys.admin)
    assert revisions[2]["actor"] == {"keyId": editor_id, "keyPrefix": editor_prefix}
    assert revisions[1]["actor"] == {"keyId": editor_id, "keyPrefix": editor_prefix}
    assert revisions[0]["actor"] == {"keyId": admin_id, "keyPrefix": admin_prefix}
    assert all(isinstance(r["createdAt"], int) for r in revisions)
    assert set(revisions[0]) == {"version", "createdAt", "actor", "changes", "restoredFrom"}

    # A PATCH that changes nothing is no new version.
    assert _patch(client, keys, wf, {}).json["version"] == 3
    assert len(_revisions(client, keys, wf).json) == 3


def test_revisions_are_cursor_paginated_newest_first(client, keys):
    _, workflow = _setup(client, keys)
    wf = workflow["id"]
    for i in range(4):
        assert _patch(client, keys, wf, {"name": f"N{i}"}).status_code == 200
    first = _revisions(client, keys, wf, "?limit=2")
    assert [r["version"] for r in first.json] == [5, 4]
    cursor = first.headers["X-Next-Cursor"]
    assert 'rel="next"' in first.headers["Link"]
    second = _revisions(client, keys, wf, f"?limit=2&cursor={cursor}")
    assert [r["version"] for r in second.json] == [3, 2]
    third = _revisions(client, keys, wf, f"?limit=2&cursor={second.headers['X-Next-Cursor']}")
    assert [r["version"] for r in third.json] == [1]
    assert "X-Next-Cursor" not in third.headers
    bad = client.get(f"{WORKFLOWS}/{wf}/revisions?cursor=!!", headers=keys.header("viewer"))
    assert_error(bad, 422)


def test_a_revision_is_the_workflow_as_it_was(client, keys):
    entity_type, workflow = _setup(client, keys, settings=SETTINGS)
    wf = workflow["id"]
    _patch(client, keys, wf, {"steps": STEPS_V2, "description": None})

    old = client.get(f"{WORKFLOWS}/{wf}/revisions/1", headers=keys.header("viewer"))
    assert old.status_code == 200
    for field in ("name", "description", "status", "entityTypeId", "steps", "settings"):
        assert old.json[field] == workflow[field], field
    assert old.json["version"] == 1
    assert old.json["steps"][0]["config"] == {"set": {"edition": "first"}}
    new = client.get(f"{WORKFLOWS}/{wf}/revisions/2", headers=keys.header("viewer")).json
    assert new["steps"][0]["config"] == {"set": {"edition": "second"}}
    assert new["description"] is None and new["entityTypeId"] == entity_type["id"]

    assert_error(client.get(f"{WORKFLOWS}/{wf}/revisions/9", headers=keys.header()), 404)
    assert_error(client.get(f"{WORKFLOWS}/{wf}/revisions/x", headers=keys.header()), 404)
    theirs = auth(keys.other_admin)
    assert_error(client.get(f"{WORKFLOWS}/{wf}/revisions", headers=theirs), 404)
    assert_error(client.get(f"{WORKFLOWS}/{wf}/revisions/1", headers=theirs), 404)
    assert_error(client.get(f"{WORKFLOWS}/wf_nope/revisions", headers=keys.header()), 404)


def test_diff_is_a_json_patch_from_the_other_version(client, keys):
    _, workflow = _setup(client, keys)
    wf = workflow["id"]
    _patch(client, keys, wf, {"steps": STEPS_V2})
    _patch(client, keys, wf, {"name": "Third", "settings": SETTINGS})
    revision = {
        v: client.get(f"{WORKFLOWS}/{wf}/revisions/{v}", headers=keys.header()).json
        for v in (1, 2, 3)
    }
    content = ("name", "description", "status", "entityTypeId", "steps", "settings")

    def body(version):
        return {k: revision[version][k] for k in content}

    patch = client.get(f"{WORKFLOWS}/{wf}/revisions/2/diff", headers=keys.header("viewer")).json
    assert patch == [{"op": "replace", "path": "/steps/0/config/set/edition", "value": "second"}]

    patch = client.get(
        f"{WORKFLOWS}/{wf}/revisions/3/diff?against=1", headers=keys.header("viewer")
    ).json
    assert jsonpatch.apply_patch(body(1), patch) == body(3)
    paths = {op["path"] for op in patch}
    assert "/name" in paths and any(p.startswith("/settings") for p in paths)

    backwards = client.get(f"{WORKFLOWS}/{wf}/revisions/1/diff?against=3", headers=keys.header())
    assert jsonpatch.apply_patch(body(3), backwards.json) == body(1)
    same = client.get(f"{WORKFLOWS}/{wf}/revisions/2/diff?against=2", headers=keys.header())
    assert same.json == []
    # The first version diffs from an empty document.
    first = client.get(f"{WORKFLOWS}/{wf}/revisions/1/diff", headers=keys.header()).json
    assert jsonpatch.apply_patch({}, first) == body(1)

    missing = client.get(f"{WORKFLOWS}/{wf}/revisions/2/diff?against=7", headers=keys.header())
    assert_error(missing, 404)
    assert_error(
        client.get(f"{WORKFLOWS}/{wf}/revisions/2/diff?against=0", headers=keys.header()), 422
    )
    assert_error(
        client.get(f"{WORKFLOWS}/{wf}/revisions/2/diff?against=two", headers=keys.header()), 422
    )


def test_restore_makes_a_new_version_equal_to_the_old_one_and_it_runs_its_steps(client, keys):
    entity_type, workflow = _setup(client, keys)
    wf = workflow["id"]
    _patch(client, keys, wf, {"steps": STEPS_V2, "name": "Second", "settings": SETTINGS})
    url = f"{WORKFLOWS}/{wf}/revisions/1/restore"
    assert_error(client.post(url, headers=keys.header("executor")), 403)
    assert_error(client.post(f"{WORKFLOWS}/{wf}/revisions/5/restore", headers=keys.header()), 404)
    assert_error(client.post(url, headers=auth(keys.other_admin)), 404)

    response = client.post(url, headers=keys.header("editor"))
    assert response.status_code == 200, response.json
    restored = response.json
    assert restored["version"] == 3 and response.headers["ETag"] == '"3"'
    for field in ("name", "description", "status", "entityTypeId", "steps", "settings"):
        assert restored[field] == workflow[field], field
    latest = _revisions(client, keys, wf).json[0]
    assert latest["version"] == 3 and latest["restoredFrom"] == 1
    assert latest["changes"] == ["name", "steps", "settings"]
    diff = client.get(f"{WORKFLOWS}/{wf}/revisions/3/diff?against=1", headers=keys.header())
    assert diff.json == []

    # A run of the restored workflow runs the old steps, and its version resolves.
    entities = make_entities(client, keys, entity_type["id"], 3)
    started = client.post(
        f"{WORKFLOWS}/{wf}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header("executor"),
    )
    run = wait_for_run(client, keys, wf, started.json["runId"])
    assert run["status"] == "completed" and run["workflowVersion"] == 3
    for entity in entities:
        data = client.get(f"/api/v1/entities/{entity['id']}", headers=keys.header()).json["data"]
        assert data["edition"] == "first"
    pinned = client.get(
        f"{WORKFLOWS}/{wf}/revisions/{run['workflowVersion']}", headers=keys.header()
    ).json
    assert pinned["steps"] == workflow["steps"]


def test_revision_rows_are_written_with_the_workflow(client, keys, session):
    _, workflow = _setup(client, keys)
    _patch(client, keys, workflow["id"], {"name": "Two"})
    rows = session.exec(
        select(WorkflowRevision).where(WorkflowRevision.workflow_id == workflow["id"])
    ).all()
    assert sorted(r.version for r in rows) == [1, 2]
    row = session.get(Workflow, workflow["id"])
    assert {r.version: r.snapshot["name"] for r in rows} == {1: "Workflow", 2: row.name}
    session.rollback()  # end the read, so SQLite lets the API write
    # Deleting a workflow (no runs) deletes its revisions too.
    delete = client.delete(f"{WORKFLOWS}/{workflow['id']}", headers=keys.header("editor"))
    assert delete.status_code == 204
    session.expire_all()
    assert session.exec(select(WorkflowRevision)).all() == []


def test_a_failed_save_leaves_no_revision(client, keys):
    _, workflow = _setup(client, keys)
    bad = _patch(client, keys, workflow["id"], {"steps": [{"type": "nope"}]})
    assert_error(bad, 422)
    assert [r["version"] for r in _revisions(client, keys, workflow["id"]).json] == [1]


# --- a workflow's JSON can be sent back ----------------------------------------------------


def test_a_workflows_json_from_get_can_be_posted_and_patched_back(client, keys):
    _, workflow = _setup(client, keys, settings=SETTINGS)
    fetched = client.get(f"{WORKFLOWS}/{workflow['id']}", headers=keys.header()).json
    assert {"id", "version", "createdAt", "updatedAt", "lastRunAt", "stepsCount"} <= set(fetched)

    created = client.post(WORKFLOWS, json=fetched, headers=keys.header("editor"))
    assert created.status_code == 201, created.json
    assert created.json["id"] != fetched["id"] and created.json["version"] == 1
    for field in ("name", "description", "steps", "settings", "entityTypeId"):
        assert created.json[field] == fetched[field]

    patched = _patch(client, keys, workflow["id"], {**fetched, "workspaceId": "ws_x"})
    assert patched.status_code == 200, patched.json
    assert patched.json["version"] == 2 and patched.json["createdAt"] == fetched["createdAt"]
    assert patched.json["steps"] == fetched["steps"]

    other = make_entity_type(client, keys, name="Article")
    moved = _patch(client, keys, workflow["id"], {**fetched, "entityTypeId": other["id"]})
    assert "entityTypeId" in assert_error(moved, 422)["errors"]
    # Unknown fields are still refused.
    assert (
        "owner" in assert_error(_patch(client, keys, workflow["id"], {"owner": 1}), 422)["errors"]
    )


# --- duplicate -----------------------------------------------------------------------------


def test_duplicate_is_a_new_draft_with_the_same_steps_and_settings(client, keys, session):
    entity_type, workflow = _setup(client, keys, settings=SETTINGS, status="active")
    wf = workflow["id"]
    trigger = client.post(
        "/api/v1/triggers",
        json={"workflowId": wf, "type": "webhook"},
        headers=keys.header("editor"),
    )
    assert trigger.status_code == 201, trigger.json
    entities = make_entities(client, keys, entity_type["id"], 2)
    started = client.post(
        f"{WORKFLOWS}/{wf}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header("executor"),
    )
    wait_for_run(client, keys, wf, started.json["runId"])

    url = f"{WORKFLOWS}/{wf}/duplicate"
    assert_error(client.post(url, headers=keys.header("executor")), 403)
    assert_error(client.post(url, headers=auth(keys.other_admin)), 404)
    response = client.post(url, headers=keys.header("editor"))
    assert response.status_code == 201, response.json
    copy = response.json
    assert copy["id"] != wf and copy["name"] == "Workflow (copy)"
    assert copy["status"] == "draft" and copy["version"] == 1 and copy["lastRunAt"] is None
    for field in ("description", "entityTypeId", "steps", "settings"):
        assert copy[field] == workflow[field], field
    assert client.get(f"{WORKFLOWS}/{copy['id']}/runs", headers=keys.header()).json == []
    triggers = client.get("/api/v1/triggers", headers=keys.header()).json
    assert [t["workflowId"] for t in triggers] == [wf]
    assert [r["version"] for r in _revisions(client, keys, copy["id"]).json] == [1]

    named = client.post(url, json={"name": "Spring sale"}, headers=keys.header("editor"))
    assert named.status_code == 201 and named.json["name"] == "Spring sale"
    assert (
        "name"
        in assert_error(client.post(url, json={"name": ""}, headers=keys.header()), 422)["errors"]
    )
    long = _patch(client, keys, wf, {"name": "x" * 200})
    assert long.status_code == 200
    cut = client.post(url, headers=keys.header("editor")).json["name"]
    assert len(cut) == 200 and cut.endswith(" (copy)")
    # The source is untouched.
    assert client.get(f"{WORKFLOWS}/{wf}", headers=keys.header()).json["status"] == "active"


# --- export / import / validate --------------------------------------------------------


def _export(client, keys, workflow_id, accept="application/json", headers=None):
    response = client.get(
        f"{WORKFLOWS}/{workflow_id}/export",
        headers={**(headers or keys.header("viewer")), "Accept": accept},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def _import(client, keys, text, content_type, headers=None):
    return client.post(
        f"{WORKFLOWS}/import",
        data=text.encode(),
        headers={**(headers or keys.header("editor")), "Content-Type": content_type},
    )


def _rich_workflow(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [
        *STEPS_V1,
        {
            "id": "gate",
            "type": "condition",
            "config": {"if": "entity.data.price > 100", "then": {"goto": "tell"}, "else": "stop"},
        },
        {
            "id": "tell",
            "type": "notify",
            "config": {
                "channel": "webhook",
                "url": "https://hooks.example.com/x",
                "message": "Prix « {{ entity.data.title }} » : 12,5 €\nnext line",
            },
        },
    ]
    return make_workflow(
        client,
        keys,
        entity_type["id"],
        steps,
        name="Étiquettes: produits",
        description="yes: no\n- a list?",
        settings=SETTINGS,
    )


def test_export_is_a_portable_document_in_the_apis_form(client, keys):
    workflow = _rich_workflow(client, keys)
    response = _export(client, keys, workflow["id"])
    assert response.mimetype == "application/json"
    document = json.loads(response.get_data(as_text=True))
    assert list(document) == [
        "apiVersion",
        "kind",
        "name",
        "description",
        "entityType",
        "steps",
        "settings",
    ]
    assert document["apiVersion"] == "conveyor/v1" and document["kind"] == "Workflow"
    assert document["entityType"] == {"name": "Product", "schema": PRODUCT_SCHEMA}
    assert document["steps"] == workflow["steps"]
    assert document["settings"] == workflow["settings"]
    text = response.get_data(as_text=True)
    for identifier in (workflow["id"], workflow["entityTypeId"], keys.workspace.id):
        assert identifier not in text

    as_yaml = _export(client, keys, workflow["id"], accept="application/yaml")
    assert as_yaml.mimetype == "application/yaml"
    assert yaml.safe_load(as_yaml.get_data(as_text=True)) == document
    assert as_yaml.get_data(as_text=True).startswith("apiVersion: conveyor/v1\nkind: Workflow\n")
    by_query = client.get(f"{WORKFLOWS}/{workflow['id']}/export?format=yaml", headers=keys.header())
    assert by_query.get_data() == as_yaml.get_data()
    assert_error(client.get(f"{WORKFLOWS}/wf_nope/export", headers=keys.header()), 404)
    assert_error(
        client.get(f"{WORKFLOWS}/{workflow['id']}/export", headers=auth(keys.other_admin)), 404
    )


def test_export_import_export_is_byte_for_byte_the_same(client, keys):
    workflow = _rich_workflow(client, keys)
    for media in ("application/json", "application/yaml"):
        first = _export(client, keys, workflow["id"], accept=media).get_data(as_text=True)
        # Into the same workspace (the entity type is matched by name) ...
        here = _import(client, keys, first, media)
        assert here.status_code == 201, here.json
        assert here.json["entityTypeId"] == workflow["entityTypeId"]
        assert here.json["status"] == "draft" and here.json["id"] != workflow["id"]
        again = _export(client, keys, here.json["id"], accept=media).get_data(as_text=True)
        assert again == first, media
        # ... and into another workspace (the entity type is created from the document).
        theirs = auth(keys.other_admin)
        there = _import(client, keys, first, media, headers=theirs)
        assert there.status_code == 201, there.json
        assert there.json["entityTypeId"] != workflow["entityTypeId"]
        exported = _export(client, keys, there.json["id"], accept=media, headers=theirs)
        assert exported.get_data(as_text=True) == first, media
    types = client.get("/api/v1/entity-types", headers=auth(keys.other_admin)).json
    assert [(t["name"], t["schema"]) for t in types] == [("Product", PRODUCT_SCHEMA)]


def test_import_refuses_an_entity_type_of_the_same_name_with_another_schema(client, keys):
    workflow = _rich_workflow(client, keys)
    document = json.loads(_export(client, keys, workflow["id"]).get_data(as_text=True))
    document["entityType"]["schema"] = {"type": "object", "required": ["sku"]}
    body = assert_error(_import(client, keys, json.dumps(document), "application/json"), 409)
    assert "entityType.schema" in body["errors"]
    assert len(client.get(WORKFLOWS, headers=keys.header()).json) == 1


def test_import_checks_the_document_like_a_save_and_creates_nothing_when_bad(client, keys):
    workflow = _rich_workflow(client, keys)
    document = json.loads(_export(client, keys, workflow["id"]).get_data(as_text=True))
    theirs = auth(keys.other_admin)
    cases = [
        ({**document, "apiVersion": "conveyor/v9"}, "apiVersion"),
        ({**document, "kind": "Entity"}, "kind"),
        ({k: v for k, v in document.items() if k != "entityType"}, "entityType"),
        ({**document, "steps": [{"type": "teleport"}]}, "steps[0].type"),
        ({**document, "steps": [{"type": "notify", "config": {}}]}, "steps[0].config.channel"),
        ({**document, "settings": {"concurrency": 0}}, "settings.concurrency"),
        (
            {**document, "entityType": {"name": "T", "schema": {"type": 5}}},
            "entityType.schema.type",
        ),
        ({**document, "id": "wf_1"}, "id"),
    ]
    for body, path in cases:
        response = _import(client, keys, json.dumps(body), "application/json", headers=theirs)
        assert path in assert_error(response, 422)["errors"], (path, response.json)
    assert client.get(WORKFLOWS, headers=theirs).json == []
    assert client.get("/api/v1/entity-types", headers=theirs).json == []

    assert_error(_import(client, keys, "{not json", "application/json"), 400)
    assert_error(_import(client, keys, "a: [b\n", "application/yaml"), 400)
    bomb = 'a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n'
    assert "alias" in assert_error(_import(client, keys, bomb, "application/yaml"), 400)["message"]
    assert_error(_import(client, keys, "- just\n- a list\n", "application/yaml"), 422)
    assert_error(
        _import(client, keys, json.dumps(document), "application/json", keys.header("viewer")), 403
    )


def test_validate_answers_what_a_save_would_without_saving(client, keys):
    entity_type = make_entity_type(client, keys)
    good = {"name": "W", "entityTypeId": entity_type["id"], "steps": STEPS_V1}
    bad = {
        "name": "",
        "entityTypeId": entity_type["id"],
        "steps": [{"type": "notify", "config": {"channel": "pigeon"}}, {"type": "nope"}],
    }
    url = f"{WORKFLOWS}/validate"
    ok = client.post(url, json=good, headers=keys.header("viewer"))
    assert ok.status_code == 200 and ok.json == {"valid": True}

    for body in (
        bad,
        {**good, "steps": [{"type": "notify", "config": {"channel": "pigeon"}}, {"type": "nope"}]},
        {**good, "entityTypeId": "et_unknown"},
        {
            **good,
            "steps": [
                {"id": "a", "type": "condition", "config": {"if": "1", "then": {"goto": "a"}}}
            ],
        },
    ):
        saved = client.post(WORKFLOWS, json=body, headers=keys.header("editor"))
        expected = assert_error(saved, 422)["errors"]
        checked = client.post(url, json=body, headers=keys.header("viewer"))
        assert checked.status_code == 200
        assert checked.json == {"valid": False, "errors": expected}
    assert client.get(WORKFLOWS, headers=keys.header()).json == []

    # A document, in YAML, validates too; an entity type absent here is fine (import creates it).
    workflow = make_workflow(client, keys, entity_type["id"], STEPS_V1)
    text = _export(client, keys, workflow["id"], accept="application/yaml").get_data(as_text=True)
    yaml_headers = {**keys.header("viewer"), "Content-Type": "application/yaml"}
    assert client.post(url, data=text, headers=yaml_headers).json == {"valid": True}
    theirs = {**auth(keys.other_admin), "Content-Type": "application/yaml"}
    assert client.post(url, data=text, headers=theirs).json == {"valid": True}
    broken = text.replace("type: publish", "type: teleport")
    result = client.post(url, data=broken, headers=yaml_headers).json
    assert result["valid"] is False and list(result["errors"]) == ["steps[2].type"]
    document = yaml.safe_load(text)
    document["entityType"]["schema"] = {"type": "object"}
    clash = client.post(url, json=document, headers=keys.header("viewer")).json
    assert clash["valid"] is False and "entityType.schema" in clash["errors"]
    assert_error(
        client.post(url, data="{", headers={**keys.header(), "Content-Type": "application/json"}),
        400,
    )
    assert_error(client.post(url, json=good), 401)


# --- run history ---------------------------------------------------------------------------


def _finished_run(client, keys, workflow_id, entity_ids):
    started = client.post(
        f"{WORKFLOWS}/{workflow_id}/run",
        json={"entityIds": entity_ids},
        headers=keys.header("executor"),
    )
    assert started.status_code == 202, started.json
    return wait_for_run(client, keys, workflow_id, started.json["runId"])


def _counts(session, run_id, job_id):
    """Whether the run and its job exist, and how many items and logs it has."""
    session.expire_all()
    counts = (
        session.get(Run, run_id) is not None,
        len(session.exec(select(RunItem).where(RunItem.run_id == run_id)).all()),
        len(session.exec(select(JobLog).where(JobLog.job_id == job_id)).all()),
        session.get(Job, job_id) is not None,
    )
    session.rollback()  # end the read, so SQLite lets the API write
    return counts


def test_delete_a_finished_run_with_its_items_and_logs(client, keys, session):
    entity_type, workflow = _setup(client, keys)
    wf = workflow["id"]
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 3)]
    kept = _finished_run(client, keys, wf, ids)
    gone = _finished_run(client, keys, wf, ids)
    before = _counts(session, gone["id"], gone["jobId"])
    assert before[0] and before[1] == 3 and before[2] > 0 and before[3]

    url = f"{WORKFLOWS}/{wf}/runs/{gone['id']}"
    assert_error(client.delete(url, headers=keys.header("executor")), 403)
    assert_error(client.delete(url, headers=auth(keys.other_admin)), 404)
    response = client.delete(url, headers=keys.header("editor"))
    assert response.status_code == 204
    assert _counts(session, gone["id"], gone["jobId"]) == (False, 0, 0, False)
    assert_error(client.get(url, headers=keys.header()), 404)
    assert_error(client.get(f"/api/v1/jobs/{gone['jobId']}", headers=keys.header()), 404)
    assert_error(client.delete(url, headers=keys.header("editor")), 404)
    # The other run is untouched.
    assert [r["id"] for r in client.get(f"{WORKFLOWS}/{wf}/runs", headers=keys.header()).json] == [
        kept["id"]
    ]
    assert _counts(session, kept["id"], kept["jobId"])[:2] == (True, 3)


def test_a_pending_or_running_run_cannot_be_deleted(client, keys, session):
    entity_type, workflow = _setup(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 2)]
    run = start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow["id"]),
        entity_ids=ids,
    )
    url = f"{WORKFLOWS}/{workflow['id']}/runs/{run.id}"
    assert_error(client.delete(url, headers=keys.header("editor")), 409)
    session.execute(
        Run.__table__.update().where(Run.__table__.c.id == run.id).values(status="running")
    )
    session.commit()
    assert_error(client.delete(url, headers=keys.header("editor")), 409)
    assert client.get(url, headers=keys.header()).status_code == 200


def test_delete_runs_before_a_time_removes_only_finished_older_runs(client, keys, session):
    entity_type, workflow = _setup(client, keys)
    wf = workflow["id"]
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 2)]
    old = [_finished_run(client, keys, wf, ids) for _ in range(2)]
    recent = _finished_run(client, keys, wf, ids)
    pending = start_run(
        session=session, queue=RecordingQueue(), workflow=session.get(Workflow, wf), entity_ids=ids
    )
    # Times are set, not waited for: the two old runs started long ago.
    for run in old:
        session.execute(
            Run.__table__.update().where(Run.__table__.c.id == run["id"]).values(started_at=1000)
        )
    session.execute(
        Run.__table__.update().where(Run.__table__.c.id == pending.id).values(created_at=1000)
    )
    session.commit()
    other_type, other_wf = _setup(client, keys)
    other_run = _finished_run(
        client,
        keys,
        other_wf["id"],
        [e["id"] for e in make_entities(client, keys, other_type["id"], 1)],
    )
    session.execute(
        Run.__table__.update().where(Run.__table__.c.id == other_run["id"]).values(started_at=1000)
    )
    session.commit()

    url = f"{WORKFLOWS}/{wf}/runs"
    assert_error(client.delete(url, headers=keys.header("editor")), 422)
    assert_error(client.delete(f"{url}?before=soon", headers=keys.header("editor")), 422)
    assert_error(client.delete(f"{url}?before=5000", headers=keys.header("executor")), 403)
    assert_error(client.delete(f"{url}?before=5000", headers=auth(keys.other_admin)), 404)
    response = client.delete(f"{url}?before=5000", headers=keys.header("editor"))
    assert response.status_code == 200 and response.json == {"deleted": 2}
    left = {r["id"] for r in client.get(url, headers=keys.header()).json}
    assert left == {recent["id"], pending.id}
    for run in old:
        assert _counts(session, run["id"], run["jobId"]) == (False, 0, 0, False)
    assert client.delete(f"{url}?before=5000", headers=keys.header("editor")).json == {"deleted": 0}
    # Another workflow's old run is not this workflow's history.
    assert session.get(Run, other_run["id"]) is not None


def test_purge_old_runs_removes_finished_runs_of_every_workspace(client, keys, session):
    entity_type, workflow = _setup(client, keys)
    ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 2)]
    old = _finished_run(client, keys, workflow["id"], ids)
    recent = _finished_run(client, keys, workflow["id"], ids)
    pending = start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow["id"]),
        entity_ids=ids,
    )
    for run_id in (old["id"], pending.id):
        session.execute(
            Run.__table__.update()
            .where(Run.__table__.c.id == run_id)
            .values(started_at=1000, created_at=1000)
        )
    session.commit()
    assert purge_old_runs(session, older_than_ms=5000) == 1
    session.expire_all()
    assert session.get(Run, old["id"]) is None
    assert session.get(Run, recent["id"]) is not None and session.get(Run, pending.id) is not None
    assert purge_old_runs(session, older_than_ms=5000) == 0


# --- step-type categories -----------------------------------------------------------------


def test_step_types_carry_a_category_and_filter_by_it(client, keys):
    every = client.get("/api/v1/step-types", headers=keys.header("viewer")).json
    by_type = {t["type"]: t["category"] for t in every}
    assert by_type["ai_generate"] == "ai"
    assert by_type["validate"] == by_type["transform"] == "data"
    assert by_type["condition"] == "control"
    assert by_type["publish"] == by_type["notify"] == "delivery"
    delivery = client.get("/api/v1/step-types?category=delivery", headers=keys.header()).json
    assert sorted(t["type"] for t in delivery) == ["notify", "publish"]
    assert all(t["category"] == "delivery" for t in delivery)
    one = client.get("/api/v1/step-types/condition", headers=keys.header()).json
    assert one["category"] == "control"
    bad = client.get("/api/v1/step-types?category=magic", headers=keys.header())
    assert "category" in assert_error(bad, 422)["errors"]


def test_yaml_bodies_mean_json(client, keys):
    entity_type = make_entity_type(client, keys)
    url = f"{WORKFLOWS}/validate"
    yaml_headers = {**keys.header("viewer"), "Content-Type": "application/yaml"}
    text = (
        f"name: W\nentityTypeId: {entity_type['id']}\nsteps:\n"
        "- id: mark\n  type: transform\n  config:\n    set:\n      since: 2026-03-29\n"
    )
    assert client.post(url, data=text, headers=yaml_headers).json == {"valid": True}
    imported = client.post(
        f"{WORKFLOWS}/import",
        data=(
            "apiVersion: conveyor/v1\nkind: Workflow\nname: Dated\nentityType:\n  name: Product\n"
            f"  schema: {json.dumps(PRODUCT_SCHEMA)}\nsteps:\n- id: mark\n  type: transform\n"
            "  config: {set: {since: 2026-03-29T10:00:00Z}}\n"
        ),
        headers={**keys.header("editor"), "Content-Type": "application/x-yaml"},
    )
    assert imported.status_code == 201, imported.json
    assert imported.json["steps"][0]["config"] == {"set": {"since": "2026-03-29T10:00:00Z"}}
    for text in ("name: .nan\n", "name: !!binary aGVsbG8=\n", "name: !!set {a, b}\n"):
        assert_error(client.post(url, data=text, headers=yaml_headers), 400)
    assert_error(client.post(url, data="\n", headers=yaml_headers), 400)
    assert_error(client.post(url, headers=keys.header("viewer")), 400)


def test_concurrent_saves_make_consecutive_versions_each_with_its_revision(app, client, keys):
    _, workflow = _setup(client, keys)
    url = f"{WORKFLOWS}/{workflow['id']}"
    codes: list[int] = []

    def save(worker: int) -> None:
        own = app.test_client()
        for i in range(5):
            response = own.patch(
                url, json={"name": f"w{worker}-{i}"}, headers=keys.header("editor")
            )
            codes.append(response.status_code)

    threads = [threading.Thread(target=save, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert codes == [200] * 20
    final = client.get(url, headers=keys.header()).json
    assert final["version"] == 21
    versions = [r["version"] for r in _revisions(client, keys, workflow["id"], "?limit=100").json]
    assert versions == list(range(21, 0, -1))
    latest = client.get(f"{url}/revisions/21", headers=keys.header()).json
    assert latest["name"] == final["name"]


AI_STEP = {
    "id": "write",
    "type": "ai_generate",
    "config": {
        "prompt": "Describe {{ entity.data.title }}",
        "outputField": "description",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "credential": "openai-main",
    },
}


def test_export_names_credentials_and_import_checks_them_in_the_target_workspace(client, keys):
    secret = "sk-live-abcdefghijklmnop"
    created = client.post(
        "/api/v1/credentials",
        json={"name": "openai-main", "type": "openai", "data": {"apiKey": secret}},
        headers=keys.header("editor"),
    )
    assert created.status_code == 201, created.json
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(client, keys, entity_type["id"], [AI_STEP])
    for media in ("application/json", "application/yaml"):
        text = _export(client, keys, workflow["id"], accept=media).get_data(as_text=True)
        assert secret not in text and created.json["id"] not in text
        assert "openai-main" in text

    text = _export(client, keys, workflow["id"]).get_data(as_text=True)
    theirs = auth(keys.other_admin)
    check = client.post(
        f"{WORKFLOWS}/validate", data=text, headers={**theirs, "Content-Type": "application/json"}
    )
    path = "steps[0].config.credential"
    assert check.json["valid"] is False and list(check.json["errors"]) == [path]
    refused = _import(client, keys, text, "application/json", headers=theirs)
    assert list(assert_error(refused, 422)["errors"]) == [path]
    # All or nothing: the entity type the import would have created is not left behind.
    assert client.get("/api/v1/entity-types", headers=theirs).json == []
    assert client.get(WORKFLOWS, headers=theirs).json == []
