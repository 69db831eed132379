"""The gateway behind ``ctx.services.llm``: picks the provider and credential, paces calls
on the shared rate limiter, raises what is worth retrying as ``TransientError`` (the step's
``settings.retry`` retries), and repairs a JSON reply once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from steps.clients import ResolvedCredential
from steps.clients.llm.errors import ProviderRateLimited, ProviderUnavailable
from steps.clients.llm.providers import (
    AnthropicProvider,
    Completion,
    OpenAIProvider,
    Provider,
    check_base_url,
)
from steps.clients.llm.replies import (
    estimate_tokens,
    json_instructions,
    parse_json_reply,
    shaped_reply,
    template_reply,
)
from steps.clients.outbound import OutboundPolicy
from steps.clients.ratelimit import Limits, RateLimiter
from steps.errors import StepError, TransientError
from steps.retry import backoff_delay

DEFAULT_TIMEOUT_SECONDS = 120.0
MAX_RATE_LIMIT_WAIT_SECONDS = 60.0
OUTPUT_TOKENS_ESTIMATE = 256


@dataclass(frozen=True)
class RetryPolicy:
    """How long a credential's bucket is held after a 429 that names no ``Retry-After``.

    The gateway sends one request per call and never retries by itself (the step's
    ``settings.retry`` does); ``max_retries`` is kept so existing callers still build one.
    """

    max_retries: int = 0
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 20.0

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter for retry number ``attempt`` (0-based)."""
        return backoff_delay(
            attempt + 1, self.backoff_seconds, cap=self.max_backoff_seconds, jitter=(0.5, 1.0)
        )


@dataclass(frozen=True)
class _Route:
    """Where one ``ai_generate`` config sends its calls."""

    provider: Provider
    bucket: str
    limits: Limits
    timeout: float


@dataclass
class LLMGateway:
    """``ctx.services.llm``: picks the provider and credential, paces calls on the
    workspace-wide limiter, and returns ``{text | json, model, usage}``."""

    workspace_id: str
    policy: OutboundPolicy
    limiter: RateLimiter | None
    credentials: Callable[[str], ResolvedCredential]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    # Told of every provider request: (provider name, ok | rate_limited | unavailable | rejected).
    observe: Callable[[str, str], None] | None = None

    def generate(
        self, config: dict[str, Any], *, prompt: str, system: str | None, ctx: Any = None
    ) -> dict[str, Any]:
        """Run one ``ai_generate`` call; raises StepError/TransientError with the reason."""
        if config["provider"] == "template":
            return template_reply(config, prompt)
        credential = self._credential(config)
        route = self._provider(config, credential)
        json_mode = config.get("format") == "json"
        schema = config.get("json_schema")
        system_parts = [p for p in (system, json_instructions(schema) if json_mode else None) if p]
        messages = (
            [{"role": "system", "content": "\n\n".join(system_parts)}] if system_parts else []
        )
        messages.append({"role": "user", "content": prompt})
        completion = self._complete(route, config, messages, ctx)
        usage = [completion.input_tokens, completion.output_tokens]
        if not json_mode:
            return shaped_reply({"text": completion.text}, completion.model, usage)
        value, problem = parse_json_reply(completion.text, schema)
        if problem:
            messages += [
                {"role": "assistant", "content": completion.text},
                {
                    "role": "user",
                    "content": f"That reply cannot be used: {problem}. "
                    "Reply again with only the corrected JSON.",
                },
            ]
            completion = self._complete(route, config, messages, ctx)
            usage = [usage[0] + completion.input_tokens, usage[1] + completion.output_tokens]
            value, problem = parse_json_reply(completion.text, schema)
            if problem:
                raise StepError(
                    f"{route.provider.name} model {completion.model}: {problem} "
                    "(after one repair attempt)"
                )
        return shaped_reply({"json": value}, completion.model, usage)

    def _credential(self, config: dict[str, Any]) -> ResolvedCredential | None:
        name = config.get("credential")
        provider = config["provider"]
        if not name:
            if provider == "openai" and config.get("base_url"):
                return None  # a keyless OpenAI-compatible server (Ollama, llama.cpp...)
            raise StepError(
                f"provider {provider!r} needs a credential (the name of a {provider} credential)"
            )
        credential = self.credentials(name)
        if credential.type != provider:
            raise StepError(f"credential {name!r} is of type {credential.type!r}, not {provider!r}")
        return credential

    def _provider(self, config: dict[str, Any], credential: ResolvedCredential | None) -> _Route:
        data = credential.data if credential else {}
        settings = credential.settings if credential else {}
        base_url = config.get("base_url") or settings.get("base_url")
        if credential is not None and config.get("base_url"):
            check_base_url(config["provider"], credential, config["base_url"])
        provider: Provider
        if config["provider"] == "openai":
            provider = OpenAIProvider(
                policy=self.policy,
                api_key=data.get("api_key"),
                base_url=base_url,
                organization=settings.get("organization"),
            )
        else:
            provider = AnthropicProvider(
                policy=self.policy,
                api_key=str(data.get("api_key") or ""),
                base_url=base_url,
                version=settings.get("anthropic_version"),
            )
        if credential is not None:
            bucket = f"{self.workspace_id}:{credential.name}"
        else:
            bucket = f"{self.workspace_id}:{config['provider']}@{base_url}"
        limits = Limits(settings.get("requests_per_minute"), settings.get("tokens_per_minute"))
        timeout = float(
            config.get("timeout_seconds")
            or settings.get("timeout_seconds")
            or DEFAULT_TIMEOUT_SECONDS
        )
        return _Route(provider, bucket, limits, timeout)

    def _request(self, provider: Provider, **request: Any) -> Completion:
        """One provider request, reported to ``observe`` with its outcome."""
        outcome = "ok"
        try:
            return provider.complete(**request)
        except ProviderRateLimited:
            outcome = "rate_limited"
            raise
        except ProviderUnavailable:
            outcome = "unavailable"
            raise
        except StepError:
            outcome = "rejected"
            raise
        finally:
            if self.observe is not None:
                self.observe(provider.name, outcome)

    def _complete(
        self,
        route: _Route,
        config: dict[str, Any],
        messages: list[dict[str, str]],
        ctx: Any,
    ) -> Completion:
        """One provider request, paced on the shared limiter.

        A 429, 5xx or timeout is raised (a ``TransientError`` carrying ``Retry-After``) after
        one request: the step's retry policy (``settings.retry``) alone decides whether there
        is another, so ``maxAttempts`` bounds the requests the provider sees. A 429 also holds
        the credential's bucket for every worker until the provider's ``Retry-After``.
        """
        provider, bucket, limits = route.provider, route.bucket, route.limits
        max_tokens = config.get("max_tokens")
        estimate = sum(estimate_tokens(m["content"]) for m in messages) + (
            max_tokens or OUTPUT_TOKENS_ESTIMATE
        )
        remaining = _remaining(ctx)
        if self.limiter is not None:
            # Waiting for a slot is waiting behind other entities: it does not count against
            # this entity's timeout (ctx.wait_turn moves its deadline), and a cancel ends it.
            # Slots are booked at most MAX_RATE_LIMIT_WAIT_SECONDS ahead; a longer queue is
            # waited out in turns, so an abandoned booking wastes little of the budget.
            while True:
                slot = self.limiter.reserve(
                    bucket, limits, tokens=estimate, max_wait=MAX_RATE_LIMIT_WAIT_SECONDS
                )
                if slot.granted or ctx is None:
                    break
                ctx.wait_turn(min(slot.wait, MAX_RATE_LIMIT_WAIT_SECONDS), self.sleep)
            if not slot.granted:
                raise TransientError(
                    f"{provider.name}: workspace rate limit reached; next slot in {slot.wait:.1f}s",
                    retry_after=slot.wait,
                )
            if slot.wait:
                if ctx is not None:
                    ctx.wait_turn(slot.wait, self.sleep)
                else:
                    self.sleep(slot.wait)
            remaining = _remaining(ctx)
        timeout = min(route.timeout, max(1.0, remaining))
        try:
            completion = self._request(
                provider,
                model=config["model"],
                messages=messages,
                max_tokens=max_tokens,
                temperature=config.get("temperature"),
                timeout=timeout,
            )
        except (ProviderRateLimited, ProviderUnavailable) as exc:
            if self.limiter is not None:
                if isinstance(exc, ProviderRateLimited):
                    # Every worker holds off, not just this one: the next reserve() of this
                    # bucket (the step's retry, or another entity's call) waits out the block.
                    hold = exc.retry_after
                    self.limiter.block(bucket, self.retry.backoff(0) if hold is None else hold)
                self.limiter.settle(bucket, limits, extra_tokens=-estimate)
            raise
        if self.limiter is not None:
            if completion.hold:
                # The provider's window is used up (x-ratelimit-remaining-* = 0): every
                # worker holds off until it resets, instead of meeting a 429 there.
                self.limiter.block(bucket, completion.hold)
            used = completion.input_tokens + completion.output_tokens
            self.limiter.settle(bucket, limits, extra_tokens=used - estimate if used else 0)
        return completion


def _remaining(ctx: Any) -> float:
    seconds = ctx.remaining_seconds() if ctx is not None else None
    return float("inf") if seconds is None else float(seconds)
