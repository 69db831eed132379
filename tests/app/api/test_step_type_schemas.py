"""Step types' ``configSchema``/``outputSchema`` are JSON Schema 2020-12 (SPEC §4), not
OpenAPI 3.0 dialect: nullable fields are type unions, never ``nullable``."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator

from steps.registry import json_schema_2020


def _served(client, keys) -> list[dict[str, Any]]:
    response = client.get("/api/v1/step-types", headers=keys.header("viewer"))
    assert response.status_code == 200
    return response.json


def test_every_served_schema_is_valid_json_schema_2020_12(client, keys):
    served = _served(client, keys)
    assert len(served) >= 6
    for step_type in served:
        for key in ("configSchema", "outputSchema"):
            schema = step_type[key]
            Draft202012Validator.check_schema(schema)
            assert '"nullable"' not in json.dumps(schema), (step_type["type"], key)


def test_config_defaults_validate_against_their_own_schema(client, keys):
    checked = 0
    for step_type in _served(client, keys):
        for name, prop in step_type["configSchema"]["properties"].items():
            if "default" in prop:
                validator = Draft202012Validator(prop)
                assert validator.is_valid(prop["default"]), (step_type["type"], name, prop)
                checked += 1
    assert checked > 10  # many optional fields default to null


def test_a_resumed_notify_output_matches_notify_output_schema(client, keys):
    by_type = {t["type"]: t for t in _served(client, keys)}
    validator = Draft202012Validator(by_type["notify"]["outputSchema"])
    assert validator.is_valid({"channel": "email", "delivered": None})
    assert validator.is_valid({"channel": "webhook", "delivered": True})
    assert not validator.is_valid({"channel": "email"})
    publish = Draft202012Validator(by_type["publish"]["outputSchema"])
    assert publish.is_valid({"publishedVersion": 3, "delivery": None})


def test_openapi_nullable_in_a_plugins_schema_is_rewritten():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "nullable": True},
            "b": {"type": "string", "enum": ["x"], "nullable": True},
            "c": {"nullable": True, "minimum": 1},
            "d": {"type": "integer", "nullable": False},
        },
    }
    rewritten = json_schema_2020(schema)
    assert rewritten["properties"] == {
        "a": {"type": ["string", "null"]},
        "b": {"type": ["string", "null"], "enum": ["x", None]},
        "c": {"anyOf": [{"minimum": 1}, {"type": "null"}]},
        "d": {"type": "integer"},
    }
    Draft202012Validator.check_schema(rewritten)
