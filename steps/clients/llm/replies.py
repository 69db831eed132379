"""Replies: JSON parsing (code fences allowed, checked against a schema), the instructions
that ask for JSON, token estimates, the reply's shape, and the offline ``template`` provider.
"""

from __future__ import annotations

import json
import re
from typing import Any

from steps.errors import StepError


def count_words(text: str) -> int:
    """The template provider's deterministic stand-in for a token count."""
    return len(text.split())


def estimate_tokens(text: str) -> int:
    """A provider-neutral guess (about four characters a token), settled after the call."""
    return len(text) // 4 + 1


_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\s*```$", re.S)


def parse_json_reply(text: str, schema: dict[str, Any] | None) -> tuple[Any, str | None]:
    """``(value, None)`` when ``text`` is JSON (code fences allowed) valid against
    ``schema``, else ``(None, reason)``."""
    candidate = text.strip()
    fenced = _FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1)
    try:
        value = json.loads(candidate)
    except json.JSONDecodeError as exc:
        return None, f"the reply is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    if schema:
        from steps.validate import schema_errors

        errors = schema_errors(schema, value)
        if errors:
            return None, "the JSON does not match jsonSchema: " + "; ".join(
                f"{e['path']}: {e['message']}" for e in errors[:5]
            )
    return value, None


def json_instructions(schema: dict[str, Any] | None) -> str:
    """What the system prompt adds for ``format: json``."""
    text = "Reply with a single JSON value and nothing else: no prose, no code fences."
    if schema:
        text += " The JSON must validate against this JSON Schema: " + json.dumps(schema)
    return text


def shaped_reply(value: dict[str, Any], model: str, usage: list[int]) -> dict[str, Any]:
    """``value`` (``text`` or ``json``) with the model and the token usage."""
    return {**value, "model": model, "usage": {"inputTokens": usage[0], "outputTokens": usage[1]}}


def template_reply(config: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The offline ``template`` provider: the rendered prompt is the reply (JSON when asked)."""
    model = config.get("model") or "template"
    usage = [count_words(prompt), count_words(prompt)]
    if config.get("format") != "json":
        return shaped_reply({"text": prompt}, model, usage)
    value, problem = parse_json_reply(prompt, config.get("json_schema"))
    if problem:
        raise StepError(f"template provider: {problem}")
    return shaped_reply({"json": value}, model, usage)
