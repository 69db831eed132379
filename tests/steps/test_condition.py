"""``condition``: evaluate ``if``; continue, stop, fail or go forward."""

from __future__ import annotations

import marshmallow as ma
import pytest

from steps import condition
from steps.base import Action, EntityState
from steps.errors import TemplateError
from steps.pipeline import EntityProgress, RunInfo, walk
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


# --- expressions have no side effects (issue 10, item 4) -------------------------------------


def test_a_condition_cannot_change_the_entity_data():
    ctx = make_ctx({"price": 150})
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        run({"if": "entity.data.update({'price': 0}) or true"}, ctx)
    assert ctx.entity.data == {"price": 150}


def test_a_condition_cannot_forge_the_run_id_of_the_idempotency_key():
    ctx = make_ctx({"price": 150}, run_id="run_1", step_id="publish")
    with pytest.raises(TemplateError, match="refused by the sandbox"):
        run({"if": "run.update({'id': 'run_FORGED'}) or true"}, ctx)
    assert ctx.run["id"] == "run_1"
    assert ctx.idempotency_key == "run_1:ent_1:publish"


def _walk(steps, data):
    info = RunInfo(run={"id": "run_1", "workflowId": "wf_1"}, steps=steps, settings={})
    progress = EntityProgress(EntityState("ent_1", dict(data), "draft", 1))
    return walk(progress, info), info


def test_in_a_run_the_entity_fails_with_the_sandbox_error_and_keeps_its_data():
    steps = [
        {
            "id": "sneak",
            "type": "condition",
            "config": {"if": "entity.data.update({'price': 0}) or true"},
        },
        {"id": "mark", "type": "transform", "config": {"set": {"run": "{{ run.id }}"}}},
    ]
    progress, info = _walk(steps, {"price": 150})
    assert progress.status == "failed"
    assert "sneak" in progress.error and "sandbox" in progress.error
    assert progress.entity.data == {"price": 150}
    assert info.run["id"] == "run_1"


# --- a step skipped by goto reads as undefined (issue 10, item 16) ---------------------------


def test_a_step_skipped_by_goto_is_undefined_so_default_applies():
    steps = [
        {"id": "gate", "type": "condition", "config": {"if": "true", "then": {"goto": "after"}}},
        {"id": "skipped", "type": "transform", "config": {"set": {"x": 1}}},
        {
            "id": "after",
            "type": "transform",
            "config": {
                "set": {
                    "seen": "{{ steps.skipped.output.changed | default(['nothing']) }}",
                    "label": "{{ steps.skipped.output.changed | default('none') }}!",
                    "known": "{{ steps.skipped.output is defined }}",
                }
            },
        },
        {"id": "last", "type": "condition", "config": {"if": "steps.skipped.output.x > 0"}},
    ]
    progress, _ = _walk(steps, {})
    assert [r["stepId"] for r in progress.records] == ["gate", "after", "last"]
    assert progress.entity.data == {"seen": ["nothing"], "label": "none!", "known": False}
    # Used as a value without a default, it fails the entity naming what is missing.
    assert progress.status == "failed"
    assert "last" in progress.error and "skipped" in progress.error
