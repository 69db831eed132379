"""Entity-type schemas run their regexes on RE2: a catastrophic pattern cannot stall the API."""

from __future__ import annotations

from tests.app.api import assert_error
from tests.bounded import finishes_within
from tests.conftest import make_entity_type

EVIL = "^(a+)+$"
PAYLOAD = "a" * 50 + "!"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "pattern": EVIL}},
    "patternProperties": {EVIL: {"type": "integer"}},
}


def test_a_catastrophic_pattern_in_an_entity_type_finishes(client, keys):
    entity_type = make_entity_type(client, keys, schema=SCHEMA)
    editor = keys.header("editor")
    with finishes_within(10):
        one = client.post(
            "/api/v1/entities",
            json={"entityTypeId": entity_type["id"], "data": {"name": PAYLOAD}},
            headers=editor,
        )
        bulk = client.post(
            "/api/v1/entities/bulk",
            json={
                "entities": [
                    {"entityTypeId": entity_type["id"], "data": {"name": "aaa", PAYLOAD: "x"}},
                    {"entityTypeId": entity_type["id"], "data": {"name": PAYLOAD}},
                ]
            },
            headers=editor,
        )
        fine = client.post(
            "/api/v1/entities",
            json={"entityTypeId": entity_type["id"], "data": {"name": "aaaa", "aa": 2}},
            headers=editor,
        )
    assert list(assert_error(one, 422)["errors"]) == ["data.name"]
    assert sorted(assert_error(bulk, 422)["errors"]) == ["entities[1].data.name"]
    assert fine.status_code == 201, fine.json
    wrong_type = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"aa": "two"}},
        headers=editor,
    )
    assert list(assert_error(wrong_type, 422)["errors"]) == ["data.aa"]


def test_patterns_re2_cannot_run_are_refused_when_the_type_is_saved(client, keys):
    lookahead = {"type": "object", "properties": {"sku": {"type": "string", "pattern": "(?=x)"}}}
    created = client.post(
        "/api/v1/entity-types",
        json={"name": "P", "schema": lookahead},
        headers=keys.header("editor"),
    )
    body = assert_error(created, 422)
    assert list(body["errors"]) == ["schema.properties.sku.pattern"]
    assert "RE2" in body["errors"]["schema.properties.sku.pattern"][0]

    entity_type = make_entity_type(client, keys)
    backreference = {"type": "object", "patternProperties": {r"(x)\1": {}}}
    patched = client.patch(
        f"/api/v1/entity-types/{entity_type['id']}",
        json={"schema": backreference},
        headers=keys.header("editor"),
    )
    body = assert_error(patched, 422)
    assert list(body["errors"]) == ["schema.patternProperties"]
    assert "(x)\\\\1" in body["errors"]["schema.patternProperties"][0]


def test_a_validate_rule_re2_cannot_run_is_refused_when_the_workflow_is_saved(client, keys):
    entity_type = make_entity_type(client, keys)
    steps = [
        {
            "id": "check",
            "type": "validate",
            "config": {"rules": [{"field": "title", "pattern": "(?<=x)y"}]},
        }
    ]
    response = client.post(
        "/api/v1/workflows",
        json={"name": "W", "entityTypeId": entity_type["id"], "steps": steps},
        headers=keys.header("editor"),
    )
    body = assert_error(response, 422)
    assert any("RE2" in str(v) for v in body["errors"].values()), body
    assert any(k.startswith("steps[0].config") for k in body["errors"]), body


def test_a_ref_that_does_not_resolve_is_a_422_not_a_crash(client, keys):
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}
    created = client.post(
        "/api/v1/entity-types", json={"name": "P", "schema": schema}, headers=keys.header("editor")
    )
    body = assert_error(created, 422)
    assert list(body["errors"]) == ["schema.properties.a.$ref"]
