"""``condition``: evaluate ``if``; ``then``/``else`` continue, stop, fail or go forward."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps import templating
from steps.base import Action, Category, SideEffect, StepContext, StepResult
from steps.fields import Expression, StepConfig

NAME = "condition"
SIDE_EFFECT = SideEffect.NONE
CATEGORY = Category.CONTROL
DESCRIPTION = (
    "Evaluates the `if` expression. `then` (when true) and `else` (when false) are each one "
    "of `continue`, `stop` (the entity completes here), `fail`, or `{goto: stepId}` "
    "(a later step)."
)
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"result": {"type": "boolean"}, "action": {"type": "string"}},
    "required": ["result", "action"],
}
SIMPLE_ACTIONS = ("continue", "stop", "fail")


class Outcome(ma.fields.Field):
    """``"continue" | "stop" | "fail" | {"goto": "<stepId>"}``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str) and value in SIMPLE_ACTIONS:
            return value
        if (
            isinstance(value, dict)
            and set(value) == {"goto"}
            and isinstance(value["goto"], str)
            and value["goto"]
        ):
            return {"goto": value["goto"]}
        raise ma.ValidationError('Must be "continue", "stop", "fail" or {"goto": "<stepId>"}.')


OUTCOME_JSON_SCHEMA = {
    "oneOf": [
        {"type": "string", "enum": list(SIMPLE_ACTIONS)},
        {
            "type": "object",
            "properties": {"goto": {"type": "string"}},
            "required": ["goto"],
            "additionalProperties": False,
        },
    ]
}


class Config(StepConfig):
    if_ = Expression(data_key="if", required=True)
    then = Outcome(load_default="continue", metadata=OUTCOME_JSON_SCHEMA)
    else_ = Outcome(data_key="else", load_default="continue", metadata=OUTCOME_JSON_SCHEMA)


def goto_targets(config: dict[str, Any]) -> list[str]:
    """The step ids this condition may jump to (checked to be later steps on save)."""
    return [o["goto"] for o in (config.get("then"), config.get("else_")) if isinstance(o, dict)]


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Evaluate the expression and say what to do next."""
    result = bool(templating.evaluate(config["if_"], ctx.variables()))
    outcome = config["then"] if result else config["else_"]
    if isinstance(outcome, dict):
        return StepResult(
            output={"result": result, "action": f"goto:{outcome['goto']}"},
            action=Action.GOTO,
            goto=outcome["goto"],
        )
    action = Action(outcome)
    error = f"condition sent the entity to fail ({config['if_']} is {result})"
    return StepResult(
        output={"result": result, "action": outcome},
        action=action,
        error=error if action is Action.FAIL else None,
    )
