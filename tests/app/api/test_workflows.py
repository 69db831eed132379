"""``/api/v1/workflows``: steps checked on save, versions bumped on every change."""

from app.models import Run
from tests.app.api import assert_error
from tests.conftest import auth, make_entity_type, make_workflow

WORKFLOWS = "/api/v1/workflows"

PIPELINE = [
    {"id": "tidy", "type": "transform", "config": {"set": {"slug": "{{ entity.data.title }}"}}},
    {
        "id": "check",
        "type": "validate",
        "config": {"rules": [{"field": "title", "required": True}]},
    },
    {
        "id": "gate",
        "type": "condition",
        "config": {"if": "entity.data.price > 100", "then": {"goto": "ship"}, "else": "stop"},
    },
    {"id": "ship", "type": "publish", "name": "Publish", "config": {}},
]


def _post(client, keys, entity_type_id, steps, **body):
    return client.post(
        WORKFLOWS,
        json={"name": "W", "entityTypeId": entity_type_id, "steps": steps, **body},
        headers=keys.header("editor"),
    )


def test_create_and_get(client, keys):
    entity_type = make_entity_type(client, keys)
    response = _post(client, keys, entity_type["id"], PIPELINE, description="Ship expensive ones")
    assert response.status_code == 201
    created = response.json
    assert response.headers["ETag"] == '"1"'
    assert created["id"].startswith("wf_")
    assert created["name"] == "W" and created["description"] == "Ship expensive ones"
    assert created["status"] == "draft"
    assert created["entityTypeId"] == entity_type["id"]
    assert created["version"] == 1
    assert created["stepsCount"] == 4
    assert created["lastRunAt"] is None
    assert [s["id"] for s in created["steps"]] == ["tidy", "check", "gate", "ship"]
    types = [s["type"] for s in created["steps"]]
    assert types == ["transform", "validate", "condition", "publish"]
    assert created["steps"][3]["name"] == "Publish"
    assert created["steps"][2]["config"] == PIPELINE[2]["config"]
    assert created["settings"] == {
        "concurrency": 1000,
        "toleratedFailurePercentage": 0,
        "retry": {"maxAttempts": 1, "backoffSeconds": 1},
        "entityTimeoutSeconds": 300,
        "notifyOnFinish": None,
        "keepPartialChanges": False,
    }

    fetched = client.get(f"{WORKFLOWS}/{created['id']}", headers=keys.header("viewer"))
    assert fetched.status_code == 200
    assert fetched.headers["ETag"] == '"1"'
    assert fetched.json == created


def test_settings_are_kept(client, keys):
    entity_type = make_entity_type(client, keys)
    settings = {
        "concurrency": 10,
        "toleratedFailurePercentage": 12.5,
        "retry": {"maxAttempts": 3, "backoffSeconds": 2},
        "entityTimeoutSeconds": 30,
    }
    created = make_workflow(client, keys, entity_type["id"], [], settings=settings, status="active")
    assert created["status"] == "active"
    assert created["settings"]["concurrency"] == 10
    assert created["settings"]["toleratedFailurePercentage"] == 12.5
    assert created["settings"]["retry"] == {"maxAttempts": 3, "backoffSeconds": 2}
    assert created["settings"]["entityTimeoutSeconds"] == 30


def test_step_ids_are_generated_when_absent_and_unique(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [
        {"type": "transform", "config": {"status": "a"}},
        {"id": "transform_2", "type": "transform", "config": {"status": "b"}},
        {"type": "transform", "config": {"status": "c"}},
        {"type": "publish"},
    ]
    created = make_workflow(client, keys, entity_type["id"], steps)
    ids = [s["id"] for s in created["steps"]]
    assert ids[1] == "transform_2"
    assert all(ids) and len(set(ids)) == 4
    assert created["steps"][3]["config"] == {}


def test_list_is_a_summary_filtered_by_status(client, keys):
    entity_type = make_entity_type(client, keys)
    made = {}
    for status in ("draft", "active", "archived", "active"):
        workflow = make_workflow(client, keys, entity_type["id"], PIPELINE[:2], status=status)
        made[workflow["id"]] = status
    response = client.get(WORKFLOWS, headers=keys.header("viewer"))
    assert response.status_code == 200
    assert [w["id"] for w in response.json] == sorted(made)
    summary = response.json[0]
    assert set(summary) == {
        "id",
        "name",
        "description",
        "status",
        "stepsCount",
        "lastRunAt",
        "entityTypeId",
        "version",
        "createdAt",
        "updatedAt",
    }
    assert summary["stepsCount"] == 2
    for status in ("draft", "active", "archived"):
        listed = client.get(f"{WORKFLOWS}?status={status}", headers=keys.header("viewer")).json
        assert sorted(w["id"] for w in listed) == sorted(i for i, s in made.items() if s == status)
    assert (
        "status"
        in assert_error(
            client.get(f"{WORKFLOWS}?status=paused", headers=keys.header("viewer")), 422
        )["errors"]
    )


def test_list_is_paginated(client, keys):
    entity_type = make_entity_type(client, keys)
    made = sorted(make_workflow(client, keys, entity_type["id"], [])["id"] for _ in range(5))
    first = client.get(f"{WORKFLOWS}?limit=2", headers=keys.header("viewer"))
    seen = [w["id"] for w in first.json]
    cursor = first.headers["X-Next-Cursor"]
    while cursor:
        page = client.get(f"{WORKFLOWS}?limit=2&cursor={cursor}", headers=keys.header("viewer"))
        seen += [w["id"] for w in page.json]
        cursor = page.headers.get("X-Next-Cursor")
    assert seen == made


def test_every_patch_bumps_the_version(client, keys):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], PIPELINE)
    url = f"{WORKFLOWS}/{created['id']}"
    editor = keys.header("editor")
    changes = [
        {"name": "Renamed"},
        {"description": "Now described"},
        {"status": "active"},
        {"steps": PIPELINE[:1]},
        {"settings": {"concurrency": 5}},
    ]
    for expected, change in enumerate(changes, start=2):
        response = client.patch(url, json=change, headers=editor)
        assert response.status_code == 200, response.json
        assert response.json["version"] == expected
        assert response.headers["ETag"] == f'"{expected}"'
    final = client.get(url, headers=editor).json
    assert final["name"] == "Renamed" and final["description"] == "Now described"
    assert final["status"] == "active"
    assert final["stepsCount"] == 1 and final["steps"][0]["id"] == "tidy"
    assert final["settings"]["concurrency"] == 5
    assert final["settings"]["retry"] == {"maxAttempts": 1, "backoffSeconds": 1}
    assert final["updatedAt"] >= created["updatedAt"]


def test_if_match_refuses_a_stale_patch(client, keys):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], [])
    url = f"{WORKFLOWS}/{created['id']}"
    editor = keys.header("editor")
    ok = client.patch(url, json={"name": "A"}, headers={**editor, "If-Match": '"1"'})
    assert ok.status_code == 200 and ok.json["version"] == 2
    stale = client.patch(url, json={"name": "B"}, headers={**editor, "If-Match": '"1"'})
    assert_error(stale, 412)
    assert client.get(url, headers=editor).json["name"] == "A"


def test_patch_checks_steps_again(client, keys):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], PIPELINE)
    url = f"{WORKFLOWS}/{created['id']}"
    response = client.patch(
        url, json={"steps": [{"type": "transform", "config": {}}]}, headers=keys.header("editor")
    )
    assert "steps[0].config" in assert_error(response, 422)["errors"]
    fetched = client.get(url, headers=keys.header("viewer")).json
    assert fetched["version"] == 1 and fetched["stepsCount"] == 4


def test_an_unknown_step_type_is_422(client, keys):
    entity_type = make_entity_type(client, keys)
    response = _post(client, keys, entity_type["id"], [PIPELINE[0], {"type": "teleport"}])
    body = assert_error(response, 422)
    assert list(body["errors"]) == ["steps[1].type"]
    assert "teleport" in body["message"]


def test_a_bad_step_config_names_the_field(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [
        PIPELINE[0],
        {
            "type": "ai_generate",
            "config": {"provider": "openai", "prompt": "Hi", "outputField": "x"},
        },
        {"type": "validate", "config": {"onInvalid": "shrug"}},
        {"type": "transform", "config": {"set": {"a": 1}, "colour": "red"}},
        {"type": "condition", "config": {}},
        {"type": "notify", "config": {"channel": "pigeon", "message": "hi"}},
        {"type": "validate", "config": {"rules": [{"field": "title"}, {"required": True}]}},
        {"type": "transform", "config": {}},
    ]
    errors = assert_error(_post(client, keys, entity_type["id"], steps), 422)["errors"]
    assert {
        "steps[1].config.model",
        "steps[2].config.onInvalid",
        "steps[3].config.colour",
        "steps[4].config.if",
        "steps[5].config.channel",
        "steps[6].config.rules[1]",
        "steps[7].config",
    } <= set(errors)
    assert not any(path.startswith("steps[0]") for path in errors)
    assert client.get(WORKFLOWS, headers=keys.header("viewer")).json == []


def test_a_template_that_does_not_parse_is_422(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [{"type": "condition", "config": {"if": "entity.data.price >"}}]
    assert (
        "steps[0].config.if"
        in assert_error(_post(client, keys, entity_type["id"], steps), 422)["errors"]
    )


def test_goto_must_name_a_later_step(client, keys):
    entity_type = make_entity_type(client, keys)
    first = {"id": "first", "type": "transform", "config": {"status": "a"}}
    last = {"id": "last", "type": "publish"}

    def gate(target):
        config = {"if": "true", "then": {"goto": target}}
        return {"id": "gate", "type": "condition", "config": config}

    for target in ("first", "gate", "nowhere"):
        response = _post(client, keys, entity_type["id"], [first, gate(target), last])
        assert list(assert_error(response, 422)["errors"]) == ["steps[1].config.goto"], target
    ok = _post(client, keys, entity_type["id"], [first, gate("last"), last])
    assert ok.status_code == 201


def test_duplicate_step_ids_are_422(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [
        {"id": "same", "type": "transform", "config": {"status": "a"}},
        {"id": "other", "type": "publish"},
        {"id": "same", "type": "transform", "config": {"status": "b"}},
    ]
    errors = assert_error(_post(client, keys, entity_type["id"], steps), 422)["errors"]
    assert list(errors) == ["steps[2].id"]


def test_create_rejects_bad_input(client, keys):
    entity_type = make_entity_type(client, keys)
    type_id = entity_type["id"]
    base = {"name": "W", "entityTypeId": type_id, "steps": []}
    cases = [
        ({}, {"name", "entityTypeId", "steps"}),
        ({**base, "name": ""}, {"name"}),
        ({**base, "name": 3}, {"name"}),
        ({**base, "steps": {}}, {"steps"}),
        ({**base, "steps": [{"config": {}}]}, {"steps[0].type"}),
        ({**base, "steps": [{"type": "publish", "id": "no spaces"}]}, {"steps[0].id"}),
        ({**base, "steps": [{"type": "publish", "config": "x"}]}, {"steps[0].config"}),
        ({**base, "steps": [{"type": "publish", "when": 1}]}, {"steps[0].when"}),
        ({**base, "status": "paused"}, {"status"}),
        ({**base, "owner": "me"}, {"owner"}),
        (
            {**base, "settings": {"toleratedFailurePercentage": 101}},
            {"settings.toleratedFailurePercentage"},
        ),
        ({**base, "settings": {"retry": {"maxAttempts": 0}}}, {"settings.retry.maxAttempts"}),
        ({**base, "settings": {"concurrency": "many"}}, {"settings.concurrency"}),
        ({**base, "settings": {"parallel": True}}, {"settings.parallel"}),
        ({**base, "entityTypeId": "et_unknown"}, {"entityTypeId"}),
    ]
    for body, fields in cases:
        response = client.post(WORKFLOWS, json=body, headers=keys.header("editor"))
        assert set(assert_error(response, 422)["errors"]) == fields, body
    assert client.get(WORKFLOWS, headers=keys.header("viewer")).json == []


def test_update_rejects_bad_input(client, keys):
    entity_type = make_entity_type(client, keys)
    url = f"{WORKFLOWS}/{make_workflow(client, keys, entity_type['id'], [])['id']}"
    for body, field in [
        ({"status": "paused"}, "status"),
        ({"name": ""}, "name"),
        ({"entityTypeId": "et_other"}, "entityTypeId"),
    ]:
        response = client.patch(url, json=body, headers=keys.header("editor"))
        assert field in assert_error(response, 422)["errors"], body
    assert client.get(url, headers=keys.header("viewer")).json["version"] == 1


def test_another_workspace_entity_type_is_unknown(client, keys):
    theirs = client.post(
        "/api/v1/entity-types", json={"name": "T"}, headers=auth(keys.other_admin)
    ).json
    assert "entityTypeId" in assert_error(_post(client, keys, theirs["id"], []), 422)["errors"]


def test_roles(client, keys):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], PIPELINE)
    url = f"{WORKFLOWS}/{created['id']}"
    body = {"name": "W", "entityTypeId": entity_type["id"], "steps": []}
    for role in ("viewer", "executor"):
        headers = keys.header(role)
        assert client.get(url, headers=headers).status_code == 200
        assert client.get(WORKFLOWS, headers=headers).status_code == 200
        assert_error(client.post(WORKFLOWS, json=body, headers=headers), 403)
        assert_error(client.patch(url, json={"name": "X"}, headers=headers), 403)
        assert_error(client.delete(url, headers=headers), 403)
    assert client.get(url, headers=keys.header("viewer")).json["version"] == 1


def test_needs_a_key(client, keys):
    assert_error(client.get(WORKFLOWS), 401)
    assert_error(client.get(WORKFLOWS, headers=auth("cvk_bad")), 401)


def test_another_workspace_workflow_is_404(client, keys):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], PIPELINE)
    url = f"{WORKFLOWS}/{created['id']}"
    other = auth(keys.other_admin)
    assert_error(client.get(url, headers=other), 404)
    assert_error(client.patch(url, json={"name": "Mine"}, headers=other), 404)
    assert_error(client.delete(url, headers=other), 404)
    assert client.get(WORKFLOWS, headers=other).json == []
    assert client.get(url, headers=keys.header("viewer")).json == created


def test_delete(client, keys):
    entity_type = make_entity_type(client, keys)
    url = f"{WORKFLOWS}/{make_workflow(client, keys, entity_type['id'], PIPELINE)['id']}"
    assert client.delete(url, headers=keys.header("editor")).status_code == 204
    assert_error(client.get(url, headers=keys.header("viewer")), 404)
    assert_error(client.delete(url, headers=keys.header("editor")), 404)


def test_a_workflow_with_runs_cannot_be_deleted_but_can_be_archived(client, keys, session):
    entity_type = make_entity_type(client, keys)
    created = make_workflow(client, keys, entity_type["id"], PIPELINE)
    url = f"{WORKFLOWS}/{created['id']}"
    session.add(
        Run(
            id="run_1",
            workspace_id=keys.workspace.id,
            workflow_id=created["id"],
            workflow_version=1,
            job_id="job_1",
            steps=created["steps"],
            settings={},
        )
    )
    session.commit()
    assert (
        "archive" in assert_error(client.delete(url, headers=keys.header("editor")), 409)["message"]
    )
    archived = client.patch(url, json={"status": "archived"}, headers=keys.header("editor"))
    assert archived.status_code == 200 and archived.json["status"] == "archived"
