"""User regexes run on RE2: catastrophic patterns finish, unsupported ones are refused on save."""

from __future__ import annotations

import json

import marshmallow as ma
import pytest
from jsonschema.exceptions import SchemaError

from steps import schemas, validate
from steps.ai_generate import Config as AiConfig
from steps.base import Action
from steps.clients.llm import parse_json_reply
from tests.bounded import finishes_within
from tests.steps.support import make_ctx

EVIL = "^(a+)+$"
PAYLOAD = "a" * 50 + "!"  # hours of backtracking for Python's re, linear for RE2
UNSUPPORTED = [r"(a)\1", "(?=a)b", "(?<!x)y", "a(?!b)", "["]


@pytest.mark.parametrize("pattern", UNSUPPORTED)
def test_patterns_re2_cannot_run_are_refused_with_a_reason(pattern):
    with pytest.raises(schemas.UserRegexError, match="Not a supported regular expression"):
        schemas.compile_user_regex(pattern)


def test_ordinary_patterns_keep_their_meaning():
    assert schemas.regex_search(r"^[A-Z]{2}-\d{4}$", "AB-1234")
    assert not schemas.regex_search(r"^[A-Z]{2}-\d{4}$", "AB-12345")
    assert schemas.regex_search("b", "abc")  # search, not match: anywhere in the string
    assert schemas.regex_search(r"^\p{L}+$", "héllo")


def test_a_validate_rule_with_a_catastrophic_pattern_finishes():
    config = validate.Config().load({"rules": [{"field": "name", "pattern": EVIL}]})
    with finishes_within(10):
        result = validate.run(config, make_ctx({"name": PAYLOAD}))
        matched = validate.run(config, make_ctx({"name": "aaaa"}))
    assert result.action is Action.FAIL
    assert result.output["errors"] == [{"path": "/name", "message": f"name does not match {EVIL}"}]
    assert matched.action is Action.CONTINUE


SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "pattern": EVIL}}},
    {"type": "object", "patternProperties": {EVIL: {"type": "string"}}},
    {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False},
    {"type": "object", "patternProperties": {EVIL: {}}, "unevaluatedProperties": False},
    {"type": "object", "propertyNames": {"pattern": EVIL}},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_schema_patterns_finish_in_validate_steps(schema):
    data = {"name": PAYLOAD, PAYLOAD: 1, "aaa": 1}
    with finishes_within(10):
        config_schema = validate.run(validate.Config().load({"schema": schema}), make_ctx(data))
        type_schema = validate.run(validate.Config().load({}), make_ctx(data, entity_schema=schema))
    assert config_schema.action is Action.FAIL
    assert type_schema.output == config_schema.output
    assert config_schema.output["valid"] is False


def test_pattern_keywords_still_validate():
    schema = {
        "type": "object",
        "properties": {"sku": {"type": "string", "pattern": "^[A-Z]+-[0-9]+$"}},
        "patternProperties": {"^x-": {"type": "integer"}},
        "additionalProperties": False,
    }
    errors = validate.schema_errors(schema, {"sku": "AB-1", "x-size": 3})
    assert errors == []
    errors = validate.schema_errors(schema, {"sku": "ab", "x-size": "big", "other": 1})
    assert [e["path"] for e in errors] == ["/", "/sku", "/x-size"]
    assert "'other' does not match any of the regexes: '^x-'" in errors[0]["message"]
    schema = {"patternProperties": {"^x-": {}}, "unevaluatedProperties": False}
    assert validate.schema_errors(schema, {"x-a": 1}) == []
    assert "'y' was unexpected" in validate.schema_errors(schema, {"x-a": 1, "y": 2})[0]["message"]


def test_ai_generate_json_schema_patterns_finish():
    schema = {"type": "object", "properties": {"slug": {"type": "string", "pattern": EVIL}}}
    with finishes_within(10):
        value, problem = parse_json_reply(json.dumps({"slug": PAYLOAD}), schema)
    assert value is None and problem and "does not match" in problem
    assert parse_json_reply('{"slug": "aaa"}', schema) == ({"slug": "aaa"}, None)


@pytest.mark.parametrize("pattern", UNSUPPORTED[:4])
def test_unsupported_patterns_are_refused_when_a_step_is_saved(pattern):
    with pytest.raises(ma.ValidationError) as rule:
        validate.Config().load({"rules": [{"field": "name", "pattern": pattern}]})
    assert "RE2" in str(rule.value.messages["rules"][0]["pattern"])
    schema = {"type": "object", "properties": {"name": {"pattern": pattern}}}
    with pytest.raises(ma.ValidationError) as in_schema:
        validate.Config().load({"schema": schema})
    assert "properties/name/pattern" in str(in_schema.value.messages["schema"])
    with pytest.raises(ma.ValidationError) as in_keys:
        validate.Config().load({"schema": {"patternProperties": {pattern: {}}}})
    assert "RE2" in str(in_keys.value.messages["schema"])
    with pytest.raises(ma.ValidationError) as in_ai:
        AiConfig().load({"prompt": "x", "format": "json", "jsonSchema": schema})
    assert "RE2" in str(in_ai.value.messages["jsonSchema"])


# --- $ref: resolved inside the schema, or refused (a crash would fail the whole request) ------


def test_a_ref_that_does_not_resolve_is_refused_on_save_and_reported_on_validation():
    for schema, where in [
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, ["properties", "a", "$ref"]),
        ({"$ref": "https://example.com/schema.json"}, ["$ref"]),  # never fetched
    ]:
        with pytest.raises(SchemaError) as caught:
            schemas.check_schema(schema)
        assert list(caught.value.path) == where
        assert "cannot be resolved" in caught.value.message
        assert "cannot be resolved" in validate.schema_errors(schema, {"a": 1})[0]["message"]
    looping = {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}
    assert "nests too deeply" in validate.schema_errors(looping, {})[0]["message"]
    fine = {"$defs": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/n"}}}
    schemas.check_schema(fine)
    assert validate.schema_errors(fine, {"a": "x"}) == [
        {"path": "/a", "message": "'x' is not of type 'integer'"}
    ]
