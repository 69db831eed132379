"""``notify``: send a rendered message to a webhook, a Slack channel or an email address."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps import templating
from steps.base import Category, SideEffect, StepContext, StepResult
from steps.errors import StepError
from steps.fields import StepConfig, Template

NAME = "notify"
SIDE_EFFECT = SideEffect.AT_MOST_ONCE
CATEGORY = Category.DELIVERY
DESCRIPTION = (
    "Sends the rendered `message` to a `channel`: `webhook` (JSON POST to `url`), `slack` "
    "(an incoming-webhook `url`, or a credential holding it) or `email` (SMTP, via a "
    "credential, to `to`). At most once per (run, entity, step)."
)
CHANNELS = ("webhook", "slack", "email")
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "channel": {"type": "string", "enum": list(CHANNELS)},
        "delivered": {
            "type": ["boolean", "null"],
            "description": "null when a worker died mid-send and the step was resumed: the "
            "message may or may not have gone out, and is not sent again (at most once)",
        },
    },
    "required": ["channel", "delivered"],
}


class Config(StepConfig):
    channel = ma.fields.String(required=True, validate=ma.validate.OneOf(CHANNELS))
    message = Template(required=True, validate=ma.validate.Length(min=1))
    subject = Template(load_default=None)
    url = ma.fields.Url(load_default=None, require_tld=False, schemes={"http", "https"})
    to = ma.fields.List(ma.fields.Email(), load_default=None)
    credential = ma.fields.String(load_default=None, metadata={"description": "credential name"})

    @ma.validates_schema
    def _channel_needs(self, data: dict[str, Any], **kwargs: Any) -> None:
        channel = data["channel"]
        if channel in ("webhook", "slack") and not (data.get("url") or data.get("credential")):
            raise ma.ValidationError(f"A {channel} notification needs a url or credential.", "url")
        if channel == "email":
            if not data.get("to"):
                raise ma.ValidationError("An email notification needs `to`.", "to")
            if not data.get("credential"):
                raise ma.ValidationError(
                    "An email notification needs an SMTP credential.", "credential"
                )


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Render the message and hand it to the channel's sender."""
    variables = ctx.variables()
    message = templating.render(config["message"], variables)
    subject = templating.render(config["subject"], variables) if config.get("subject") else None
    if ctx.services is None:
        raise StepError("notifications are not available in this worker")
    ctx.services.notify(config, message=message, subject=subject, ctx=ctx)
    # In a dry run the services only record what would have been sent.
    return StepResult(output={"channel": config["channel"], "delivered": not ctx.dry_run})
