"""``approval``: a review gate; the entity waits, holding nothing, until someone decides.

``run`` only says *wait* and what the reviewer sees: the engine parks the item in status
``awaiting_approval`` (no worker, lease or connection is held) and opens one approval
through ``app.services.approvals.open_approvals``. A decision moves the item on: approved
entities continue at the next step; rejected ones end per ``onReject`` (``stop``: the
entity completes here with its changes so far; ``fail``: it fails). Without a decision
within ``timeoutHours`` the sweeper applies ``onTimeout``.
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps import templating
from steps.base import Action, Category, SideEffect, StepContext, StepResult
from steps.fields import StepConfig, Template

NAME = "approval"
SIDE_EFFECT = SideEffect.NONE
CATEGORY = Category.REVIEW
DESCRIPTION = (
    "A review gate: the entity stops in status `awaiting_approval` until a reviewer approves "
    "or rejects it (`POST /approvals/{id}/approve|reject`, or `/approvals/decide` in bulk). "
    "Approved entities continue at the next step; rejected ones end per `onReject` (`stop`: "
    "completed with the changes made so far, `fail`: failed). `instructions` is a template "
    "shown to reviewers; `assignees` are free-form labels; after `timeoutHours` without a "
    "decision, `onTimeout` decides. A waiting entity holds no worker."
)
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "instructions": {"type": ["string", "null"]},
        "assignees": {"type": "array", "items": {"type": "string"}},
        "timeoutHours": {"type": ["number", "null"]},
        "onTimeout": {"type": "string", "enum": ["reject", "approve"]},
        "onReject": {"type": "string", "enum": ["stop", "fail"]},
        "decision": {"type": "string", "enum": ["approved", "rejected", "expired"]},
        "comment": {"type": ["string", "null"]},
        "decidedBy": {"type": ["string", "null"]},
    },
    "required": ["onTimeout", "onReject"],
}
MAX_TIMEOUT_HOURS = 24 * 365


class Config(StepConfig):
    instructions = Template(
        load_default=None,
        validate=ma.validate.Length(max=10_000),
        metadata={"description": "shown to reviewers; a template over the entity"},
    )
    assignees = ma.fields.List(
        ma.fields.String(validate=ma.validate.Length(min=1, max=200)),
        load_default=list,
        validate=ma.validate.Length(max=100),
        metadata={"description": "free-form labels (people, teams)"},
    )
    timeout_hours = ma.fields.Float(
        data_key="timeoutHours",
        load_default=None,
        validate=ma.validate.Range(min=0, min_inclusive=False, max=MAX_TIMEOUT_HOURS),
    )
    on_timeout = ma.fields.String(
        data_key="onTimeout",
        load_default="reject",
        validate=ma.validate.OneOf(("reject", "approve")),
    )
    on_reject = ma.fields.String(
        data_key="onReject", load_default="fail", validate=ma.validate.OneOf(("stop", "fail"))
    )


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Ask the engine to park the entity at this gate, with what the reviewer needs."""
    instructions = config.get("instructions")
    if instructions:
        instructions = templating.render(instructions, ctx.variables())
    return StepResult(
        action=Action.WAIT,
        output={
            "instructions": instructions,
            "assignees": list(config.get("assignees") or []),
            "timeoutHours": config.get("timeout_hours"),
            "onTimeout": config.get("on_timeout", "reject"),
            "onReject": config.get("on_reject", "fail"),
        },
    )
