"""``/api/v1/step-types``: the registered step types and their JSON Schemas."""

from tests.app.api import assert_error
from tests.conftest import auth

BUILT_INS = ["ai_generate", "validate", "transform", "condition", "publish", "notify"]


def test_list_has_the_six_built_ins_with_their_schemas(client, keys):
    response = client.get("/api/v1/step-types", headers=keys.header("viewer"))
    assert response.status_code == 200
    assert [t["type"] for t in response.json][:6] == BUILT_INS
    for step_type in response.json:
        assert set(step_type) == {"type", "category", "description", "configSchema", "outputSchema"}
        assert step_type["description"]
        assert step_type["configSchema"]["type"] == "object"
        assert isinstance(step_type["configSchema"]["properties"], dict)
        assert step_type["outputSchema"]["type"] == "object"


def test_config_schemas_use_the_json_field_names(client, keys):
    by_type = {t["type"]: t for t in client.get("/api/v1/step-types", headers=keys.header()).json}
    assert {"if", "then", "else"} <= set(by_type["condition"]["configSchema"]["properties"])
    ai = by_type["ai_generate"]["configSchema"]
    assert {"prompt", "outputField", "provider", "model"} <= set(ai["properties"])
    assert set(ai["required"]) >= {"prompt", "outputField"}
    assert "onInvalid" in by_type["validate"]["configSchema"]["properties"]
    assert {"valid", "errors"} <= set(by_type["validate"]["outputSchema"]["properties"])


def test_get_one(client, keys):
    listed = {t["type"]: t for t in client.get("/api/v1/step-types", headers=keys.header()).json}
    for name in BUILT_INS:
        response = client.get(f"/api/v1/step-types/{name}", headers=keys.header("viewer"))
        assert response.status_code == 200
        assert response.json == listed[name]


def test_an_unknown_step_type_is_404(client, keys):
    body = assert_error(client.get("/api/v1/step-types/teleport", headers=keys.header()), 404)
    assert "teleport" in body["message"]


def test_needs_a_key(client, keys):
    assert_error(client.get("/api/v1/step-types"), 401)
    assert_error(client.get("/api/v1/step-types/publish", headers=auth("cvk_bad")), 401)


def test_is_read_only(client, keys):
    assert_error(client.post("/api/v1/step-types", json={}, headers=keys.header()), 405)
    assert_error(client.delete("/api/v1/step-types/publish", headers=keys.header()), 405)
