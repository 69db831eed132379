"""``publish``: mark the entity published, and optionally deliver it to a signed webhook."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps.base import Category, SideEffect, StepContext, StepResult
from steps.errors import StepError
from steps.fields import StepConfig

NAME = "publish"
SIDE_EFFECT = SideEffect.IDEMPOTENT
CATEGORY = Category.DELIVERY
DESCRIPTION = (
    "Marks the entity published (`status: published`, `publishedAt`, `publishedVersion`) "
    "and, with a `target`, POSTs it to an HTTP endpoint signed per the Standard Webhooks "
    "scheme, with the idempotency key `runId:entityId:stepId`. At most once per (run, "
    "entity, step)."
)
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "publishedVersion": {"type": "integer"},
        "delivery": {
            "type": ["object", "null"],
            "properties": {"statusCode": {"type": "integer"}},
        },
    },
    "required": ["publishedVersion"],
}


class Target(ma.Schema):
    class Meta:
        unknown = ma.RAISE

    url = ma.fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    credential = ma.fields.String(
        load_default=None, metadata={"description": "webhook signing secret credential name"}
    )
    headers = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String(), load_default=dict)
    timeout_seconds = ma.fields.Float(
        data_key="timeoutSeconds", load_default=10.0, validate=ma.validate.Range(min=0.1, max=120)
    )


class Config(StepConfig):
    target = ma.fields.Nested(Target, load_default=None)


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Mark the entity published; the job layer stamps ``publishedAt``/``publishedVersion``."""
    ctx.entity.status = "published"
    ctx.entity.published = True
    delivery = None
    if config.get("target"):
        if ctx.services is None:
            raise StepError("publish targets are not available in this worker")
        delivery = ctx.services.deliver(config["target"], ctx)
    return StepResult(output={"publishedVersion": ctx.entity.version + 1, "delivery": delivery})
