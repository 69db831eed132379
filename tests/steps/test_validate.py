"""``validate``: JSON Schema (default: the entity type's) plus rules; fail or stop."""

from __future__ import annotations

import marshmallow as ma
import pytest

from steps import validate
from steps.base import Action
from tests.steps.support import make_ctx

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 3},
        "price": {"type": "number", "minimum": 0},
        "seo": {"type": "object", "required": ["title"]},
    },
    "required": ["title", "price"],
}


def run(config, ctx):
    return validate.run(validate.Config().load(config), ctx)


def test_valid_entity_continues():
    result = run({}, make_ctx({"title": "Hat", "price": 3}, entity_schema=SCHEMA))
    assert result.action is Action.CONTINUE
    assert result.output == {"valid": True, "errors": []}


def test_every_failing_path_is_reported():
    ctx = make_ctx({"title": "Ha", "seo": {}}, entity_schema=SCHEMA)
    result = run({}, ctx)
    assert result.action is Action.FAIL
    paths = [e["path"] for e in result.output["errors"]]
    assert paths == ["/price", "/seo/title", "/title"]
    assert "validation failed" in result.error and "/price" in result.error


def test_rules():
    ctx = make_ctx({"title": "hat", "sku": "x-1", "size": "XXL", "body": "a" * 20})
    rules = [
        {"field": "description", "required": True},
        {"field": "title", "minLength": 5, "message": "title too short"},
        {"field": "body", "maxLength": 10},
        {"field": "sku", "pattern": "^[A-Z]+-[0-9]+$"},
        {"field": "size", "enum": ["S", "M", "L"]},
        {"expression": "entity.data.title != 'hat'"},
        {"field": "title", "required": True, "minLength": 1},
    ]
    result = run({"rules": rules}, ctx)
    messages = [(e["path"], e["message"]) for e in result.output["errors"]]
    assert messages == [
        ("/description", "description is required"),
        ("/title", "title too short"),
        ("/body", "body is longer than 10"),
        ("/sku", "sku does not match ^[A-Z]+-[0-9]+$"),
        ("/size", "size is not one of ['S', 'M', 'L']"),
        ("/", "expression is false: entity.data.title != 'hat'"),
    ]


def test_on_invalid_stop_completes_the_entity():
    result = run({"onInvalid": "stop", "schema": SCHEMA}, make_ctx({}))
    assert result.action is Action.STOP
    assert result.output["valid"] is False


def test_config_schema_overrides_the_entity_types():
    ctx = make_ctx({"x": 1}, entity_schema=SCHEMA)
    assert run({"schema": {"type": "object"}}, ctx).output["valid"] is True


def test_config_is_checked():
    with pytest.raises(ma.ValidationError):
        validate.Config().load({"rules": [{"pattern": "("}]})
    with pytest.raises(ma.ValidationError):
        validate.Config().load({"schema": {"type": "nope"}})
    with pytest.raises(ma.ValidationError):
        validate.Config().load({"onInvalid": "ignore"})
