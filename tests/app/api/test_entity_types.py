"""``/api/v1/entity-types``: types with a JSON Schema for their entities' data."""

from tests.app.api import assert_error
from tests.conftest import PRODUCT_SCHEMA, auth, make_entities, make_entity_type, make_workflow


def test_create_get_update_delete(client, keys):
    created = make_entity_type(client, keys, description="Things we sell")
    assert created["id"].startswith("et_")
    assert created["name"] == "Product"
    assert created["description"] == "Things we sell"
    assert created["schema"] == PRODUCT_SCHEMA
    assert isinstance(created["createdAt"], int)
    assert created["updatedAt"] >= created["createdAt"]
    url = f"/api/v1/entity-types/{created['id']}"

    fetched = client.get(url, headers=keys.header("viewer"))
    assert fetched.status_code == 200
    assert fetched.json == created

    new_schema = {"type": "object", "properties": {"sku": {"type": "string"}}}
    patched = client.patch(
        url, json={"name": "Article", "schema": new_schema}, headers=keys.header("editor")
    )
    assert patched.status_code == 200
    assert patched.json["name"] == "Article"
    assert patched.json["schema"] == new_schema
    assert patched.json["description"] == "Things we sell"
    assert patched.json["updatedAt"] >= created["updatedAt"]
    assert client.get(url, headers=keys.header("viewer")).json == patched.json

    cleared = client.patch(url, json={"description": None}, headers=keys.header("editor"))
    assert cleared.status_code == 200 and cleared.json["description"] is None

    deleted = client.delete(url, headers=keys.header("editor"))
    assert deleted.status_code == 204
    assert_error(client.get(url, headers=keys.header("viewer")), 404)
    assert_error(client.delete(url, headers=keys.header("editor")), 404)


def test_schema_defaults_to_any_object(client, keys):
    created = make_entity_type(client, keys, schema=None)
    assert created["schema"] == {"type": "object"}
    entity = client.post(
        "/api/v1/entities",
        json={"entityTypeId": created["id"], "data": {"anything": [1, 2]}},
        headers=keys.header("editor"),
    )
    assert entity.status_code == 201


def test_list_is_paginated_and_scoped_to_the_workspace(client, keys):
    made = [make_entity_type(client, keys, name=f"Type {i}")["id"] for i in range(5)]
    client.post("/api/v1/entity-types", json={"name": "Theirs"}, headers=auth(keys.other_admin))
    first = client.get("/api/v1/entity-types?limit=3", headers=keys.header("viewer"))
    assert first.status_code == 200
    assert len(first.json) == 3
    cursor = first.headers["X-Next-Cursor"]
    second = client.get(f"/api/v1/entity-types?limit=3&cursor={cursor}", headers=keys.header())
    assert "X-Next-Cursor" not in second.headers
    listed = [t["id"] for t in first.json + second.json]
    assert listed == sorted(made)
    other = client.get("/api/v1/entity-types", headers=auth(keys.other_admin)).json
    assert [t["name"] for t in other] == ["Theirs"]


def test_a_bad_json_schema_is_422_naming_the_path(client, keys):
    headers = keys.header("editor")
    response = client.post(
        "/api/v1/entity-types", json={"name": "X", "schema": {"type": "nope"}}, headers=headers
    )
    assert "schema.type" in assert_error(response, 422)["errors"]
    response = client.post(
        "/api/v1/entity-types",
        json={"name": "X", "schema": {"properties": {"price": {"minimum": "zero"}}}},
        headers=headers,
    )
    assert "schema.properties.price.minimum" in assert_error(response, 422)["errors"]
    assert client.get("/api/v1/entity-types", headers=headers).json == []

    created = make_entity_type(client, keys)
    response = client.patch(
        f"/api/v1/entity-types/{created['id']}",
        json={"schema": {"required": "title"}},
        headers=headers,
    )
    assert "schema.required" in assert_error(response, 422)["errors"]
    fetched = client.get(f"/api/v1/entity-types/{created['id']}", headers=headers).json
    assert fetched["schema"] == PRODUCT_SCHEMA


def test_create_rejects_bad_input(client, keys):
    cases = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 7}, "name"),
        ({"name": "X", "schema": "object"}, "schema"),
        ({"name": "X", "schema": []}, "schema"),
        ({"name": "X", "description": 3}, "description"),
        ({"name": "X", "id": "et_mine"}, "id"),
        ({"name": "X", "createdAt": 1}, "createdAt"),
        ({"name": "X", "fields": []}, "fields"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/entity-types", json=body, headers=keys.header("editor"))
        assert field in assert_error(response, 422)["errors"], body


def test_update_rejects_bad_input(client, keys):
    url = f"/api/v1/entity-types/{make_entity_type(client, keys)['id']}"
    for body, field in [({"name": ""}, "name"), ({"schema": 1}, "schema"), ({"x": 1}, "x")]:
        response = client.patch(url, json=body, headers=keys.header("editor"))
        assert field in assert_error(response, 422)["errors"], body


def test_roles(client, keys):
    created = make_entity_type(client, keys)
    url = f"/api/v1/entity-types/{created['id']}"
    assert client.get("/api/v1/entity-types", headers=keys.header("viewer")).status_code == 200
    for role in ("viewer", "executor"):
        headers = keys.header(role)
        assert_error(client.post("/api/v1/entity-types", json={"name": "X"}, headers=headers), 403)
        assert_error(client.patch(url, json={"name": "Y"}, headers=headers), 403)
        assert_error(client.delete(url, headers=headers), 403)
    assert client.get(url, headers=keys.header("viewer")).json["name"] == "Product"


def test_needs_a_key(client, keys):
    assert_error(client.get("/api/v1/entity-types"), 401)
    assert_error(client.post("/api/v1/entity-types", json={"name": "X"}), 401)
    assert_error(client.get("/api/v1/entity-types", headers=auth("cvk_bad")), 401)


def test_another_workspace_type_is_404(client, keys):
    created = make_entity_type(client, keys)
    url = f"/api/v1/entity-types/{created['id']}"
    other = auth(keys.other_admin)
    assert_error(client.get(url, headers=other), 404)
    assert_error(client.patch(url, json={"name": "Mine"}, headers=other), 404)
    assert_error(client.delete(url, headers=other), 404)
    assert client.get(url, headers=keys.header("viewer")).json["name"] == "Product"


def test_deleting_a_type_with_entities_is_409(client, keys):
    created = make_entity_type(client, keys)
    [entity] = make_entities(client, keys, created["id"], 1)
    url = f"/api/v1/entity-types/{created['id']}"
    assert_error(client.delete(url, headers=keys.header("editor")), 409)
    assert client.get(url, headers=keys.header("viewer")).status_code == 200
    client.delete(f"/api/v1/entities/{entity['id']}", headers=keys.header("editor"))
    assert client.delete(url, headers=keys.header("editor")).status_code == 204


def test_deleting_a_type_with_workflows_is_409(client, keys):
    created = make_entity_type(client, keys)
    workflow = make_workflow(
        client, keys, created["id"], [{"type": "transform", "config": {"status": "ready"}}]
    )
    url = f"/api/v1/entity-types/{created['id']}"
    assert_error(client.delete(url, headers=keys.header("editor")), 409)
    client.delete(f"/api/v1/workflows/{workflow['id']}", headers=keys.header("editor"))
    assert client.delete(url, headers=keys.header("editor")).status_code == 204
