"""``condition``: evaluate ``if``; continue, stop, fail or go forward."""

from __future__ import annotations

import marshmallow as ma
import pytest

from steps import condition
from steps.base import Action
from steps.errors import TemplateError
from tests.steps.support import make_ctx


def run(config, ctx):
    return condition.run(condition.Config().load(config), ctx)


def test_then_and_else():
    config = {"if": "entity.data.price > 100 and steps.check.output.valid", "else": "stop"}
    outputs = {"check": {"valid": True}}
    high = run(config, make_ctx({"price": 150}, outputs=outputs))
    assert (high.output, high.action) == ({"result": True, "action": "continue"}, Action.CONTINUE)
    low = run(config, make_ctx({"price": 50}, outputs=outputs))
    assert (low.output, low.action) == ({"result": False, "action": "stop"}, Action.STOP)


def test_fail_and_goto():
    failed = run({"if": "input.skip", "then": "fail"}, make_ctx(input={"skip": True}))
    assert failed.action is Action.FAIL and "input.skip" in failed.error
    jumped = run({"if": "run.id == 'run_1'", "then": {"goto": "publish"}}, make_ctx())
    assert (jumped.action, jumped.goto) == (Action.GOTO, "publish")
    assert jumped.output == {"result": True, "action": "goto:publish"}


def test_a_broken_expression_fails_the_entity_cleanly():
    with pytest.raises(TemplateError, match="undefined"):
        run({"if": "entity.data.missing > 1"}, make_ctx({}))
    with pytest.raises(TemplateError, match="sandbox"):
        run({"if": "''.__class__.__mro__"}, make_ctx({}))


def test_config_is_checked():
    with pytest.raises(ma.ValidationError):
        condition.Config().load({"if": "a >"})
    with pytest.raises(ma.ValidationError):
        condition.Config().load({"if": "true", "then": "explode"})
    assert condition.goto_targets(condition.Config().load({"if": "1", "else": {"goto": "x"}})) == [
        "x"
    ]
