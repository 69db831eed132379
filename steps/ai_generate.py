"""``ai_generate``: render a prompt, call an LLM provider, write the reply into the entity."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from steps import templating
from steps.base import Category, SideEffect, StepContext, StepResult
from steps.clients.llm import template_reply
from steps.errors import StepError
from steps.fields import DataPath, JsonSchemaDict, StepConfig, Template
from steps.paths import set_path

NAME = "ai_generate"
SIDE_EFFECT = SideEffect.IDEMPOTENT
CATEGORY = Category.AI
DESCRIPTION = (
    "Renders `prompt` (and `system`), calls the LLM `provider` (`openai`-compatible, "
    "`anthropic`, or the offline `template` provider) with `model`, and writes the text — "
    "or the parsed JSON when `format` is `json`, validated against `jsonSchema` — to "
    "`outputField` of the entity data. Calls share the workspace-wide requests/tokens per "
    "minute of their credential; a 429 holds the credential's calls for `Retry-After`. 429s, "
    "5xx and timeouts are retried per the workflow's `settings.retry` (one request per "
    "attempt). A `baseUrl` with a `credential` must have the origin of the credential's own "
    "`baseUrl` (its key goes nowhere else). `format: json` gets one repair attempt when the "
    "reply does not parse or match `jsonSchema`."
)
PROVIDERS = ("openai", "anthropic", "template")
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "json": {},
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "properties": {
                "inputTokens": {"type": "integer"},
                "outputTokens": {"type": "integer"},
            },
        },
    },
    "required": ["model", "usage"],
}


class Config(StepConfig):
    provider = ma.fields.String(load_default="template", validate=ma.validate.OneOf(PROVIDERS))
    model = ma.fields.String(load_default=None, validate=ma.validate.Length(min=1, max=200))
    prompt = Template(required=True, validate=ma.validate.Length(min=1))
    system = Template(load_default=None)
    output_field = DataPath(data_key="outputField", required=True)
    format = ma.fields.String(load_default="text", validate=ma.validate.OneOf(["text", "json"]))
    json_schema = JsonSchemaDict(data_key="jsonSchema", load_default=None)
    credential = ma.fields.String(load_default=None, metadata={"description": "credential name"})
    base_url = ma.fields.Url(data_key="baseUrl", load_default=None, require_tld=False)
    temperature = ma.fields.Float(load_default=None, validate=ma.validate.Range(min=0, max=2))
    max_tokens = ma.fields.Integer(
        data_key="maxTokens", load_default=None, validate=ma.validate.Range(min=1, max=200_000)
    )
    max_retries = ma.fields.Integer(
        data_key="maxRetries",
        load_default=None,
        validate=ma.validate.Range(min=0, max=10),
        metadata={
            "description": "deprecated and ignored: retries follow the workflow's "
            "settings.retry.maxAttempts (one provider request per attempt)"
        },
    )
    timeout_seconds = ma.fields.Float(
        data_key="timeoutSeconds",
        load_default=None,
        validate=ma.validate.Range(min=1, max=600),
        metadata={"description": "per provider call (default 120, or the credential's)"},
    )

    @ma.validates_schema
    def _provider_needs(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["provider"] in ("openai", "anthropic") and not data.get("model"):
            raise ma.ValidationError("A model is required for this provider.", "model")
        if data.get("json_schema") and data["format"] != "json":
            raise ma.ValidationError("jsonSchema needs format: json.", "jsonSchema")


def run(config: dict[str, Any], ctx: StepContext) -> StepResult:
    """Generate text (or JSON) for the entity and store it at ``outputField``."""
    variables = ctx.variables()
    prompt = templating.render(config["prompt"], variables)
    system = templating.render(config["system"], variables) if config.get("system") else None
    llm = ctx.services.llm if ctx.services is not None else None
    if llm is not None:
        reply = llm.generate(config, prompt=prompt, system=system, ctx=ctx)
    elif config["provider"] == "template":
        reply = template_reply(config, prompt)
    else:
        raise StepError(f"provider {config['provider']!r} is not available in this worker")
    value = reply.get("json") if config["format"] == "json" else reply["text"]
    set_path(ctx.entity.data, config["output_field"], value)
    return StepResult(output=reply, usage=reply.get("usage"))
