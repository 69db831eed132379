"""LLM calls for ``ai_generate``, one concern a module:

- ``errors``: what a provider call ends in (rejected, rate limited, unavailable);
- ``providers``: the OpenAI-compatible and Anthropic providers and their shared HTTP call;
- ``replies``: JSON reply parsing, token estimates and the offline ``template`` provider;
- ``gateway``: ``LLMGateway`` (``ctx.services.llm``), which paces calls on the shared limiter.

The public names are re-exported here: ``from steps.clients.llm import LLMGateway`` works.
"""

from __future__ import annotations

from steps.clients.llm.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from steps.clients.llm.gateway import (
    DEFAULT_TIMEOUT_SECONDS,
    MAX_RATE_LIMIT_WAIT_SECONDS,
    OUTPUT_TOKENS_ESTIMATE,
    LLMGateway,
    RetryPolicy,
)
from steps.clients.llm.providers import (
    ANTHROPIC_DEFAULT_MAX_TOKENS,
    ANTHROPIC_VERSION,
    DEFAULT_ANTHROPIC_BASE_URL,
    DEFAULT_OPENAI_BASE_URL,
    MAX_REPLY_BYTES,
    AnthropicProvider,
    Completion,
    OpenAIProvider,
    Provider,
    check_base_url,
    provider_message,
)
from steps.clients.llm.replies import (
    count_words,
    estimate_tokens,
    json_instructions,
    parse_json_reply,
    template_reply,
)

__all__ = [
    "ANTHROPIC_DEFAULT_MAX_TOKENS",
    "ANTHROPIC_VERSION",
    "DEFAULT_ANTHROPIC_BASE_URL",
    "DEFAULT_OPENAI_BASE_URL",
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_RATE_LIMIT_WAIT_SECONDS",
    "MAX_REPLY_BYTES",
    "OUTPUT_TOKENS_ESTIMATE",
    "AnthropicProvider",
    "Completion",
    "LLMGateway",
    "OpenAIProvider",
    "Provider",
    "ProviderRateLimited",
    "ProviderRejected",
    "ProviderUnavailable",
    "RetryPolicy",
    "check_base_url",
    "count_words",
    "estimate_tokens",
    "json_instructions",
    "parse_json_reply",
    "provider_message",
    "template_reply",
]
