"""LLM providers (OpenAI-compatible, Anthropic, offline template) and the gateway that paces
their calls on the shared rate limiter, raises what is worth retrying as ``TransientError`` (the
step's ``settings.retry`` retries), and parses JSON replies.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from steps.clients import ResolvedCredential
from steps.clients.outbound import OutboundPolicy, OutboundResponse, origin, request, same_origin
from steps.clients.ratelimit import Limits, RateLimiter
from steps.errors import OutboundTimeout, OutboundUnreachable, StepError, TransientError
from steps.retry import backoff_delay, retry_after_seconds

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
DEFAULT_TIMEOUT_SECONDS = 120.0
MAX_RATE_LIMIT_WAIT_SECONDS = 60.0
OUTPUT_TOKENS_ESTIMATE = 256
MAX_REPLY_BYTES = 4_000_000


class ProviderRejected(StepError):
    """The provider refused the request (4xx other than 408/429): retrying will not help."""


class ProviderRateLimited(TransientError):
    """The provider answered 429."""


class ProviderUnavailable(TransientError):
    """The provider answered 5xx (or 408/529), timed out, or could not be reached."""


@dataclass
class Completion:
    """One provider reply."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0


class Provider(Protocol):
    """A chat-completion API."""

    name: str

    def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None,
        temperature: float | None,
        timeout: float,
    ) -> Completion: ...

    def check(self, *, timeout: float) -> str: ...


def provider_message(response: OutboundResponse) -> str:
    """The provider's own error message (``error.message`` in both formats), else the body."""
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except ValueError:
        pass
    return response.snippet() or "(empty body)"


def _check_status(provider: str, response: OutboundResponse) -> None:
    """Raise the error class that matches a non-2xx status."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{provider} answered {status}: {provider_message(response)}"
    if status == 429:
        raise ProviderRateLimited(message, retry_after=retry_after_seconds(response.headers))
    if status in (408, 409) or status >= 500:
        raise ProviderUnavailable(message, retry_after=retry_after_seconds(response.headers))
    raise ProviderRejected(message)


def _call(
    provider: str,
    policy: OutboundPolicy,
    method: str,
    url: str,
    *,
    headers: dict[str, str],
    body: Any = None,
    timeout: float,
) -> Any:
    """One provider request: transport failures become ``ProviderUnavailable``."""
    try:
        response = request(
            policy,
            method,
            url,
            json=body,
            headers=headers,
            timeout=timeout,
            max_bytes=MAX_REPLY_BYTES,
            pin_origin=True,  # the key never follows a redirect to another host
        )
    except (OutboundUnreachable, OutboundTimeout) as exc:
        raise ProviderUnavailable(f"{provider}: {exc.message}") from exc
    _check_status(provider, response)
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderUnavailable(
            f"{provider} answered {response.status_code} with a body that is not JSON: "
            f"{response.snippet()}"
        ) from exc


def _check_models(provider: Any, url: str, timeout: float) -> str:
    """List the provider's models at ``url``: the endpoint answers and accepts the key."""
    reply = _call(
        provider.name, provider.policy, "GET", url, headers=provider.headers, timeout=timeout
    )
    count = len(reply.get("data") or []) if isinstance(reply, dict) else 0
    return f"{origin(provider.base_url)} accepted the key ({count} models listed)"


class OpenAIProvider:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, Azure, Ollama, vLLM...)."""

    name = "openai"

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        api_key: str | None,
        base_url: str | None = None,
        organization: str | None = None,
    ) -> None:
        self.policy = policy
        self.base_url = (base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        if organization:
            self.headers["OpenAI-Organization"] = organization

    def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None,
        temperature: float | None,
        timeout: float,
    ) -> Completion:
        """POST ``/chat/completions``."""
        body: dict[str, Any] = {"model": model, "messages": messages}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        reply = _call(
            self.name,
            self.policy,
            "POST",
            f"{self.base_url}/chat/completions",
            headers=self.headers,
            body=body,
            timeout=timeout,
        )
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderUnavailable(
                f"openai reply has no choices[0].message: {reply!r:.300}"
            ) from exc
        usage = reply.get("usage") or {}
        return Completion(
            text=text,
            model=str(reply.get("model") or model),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )

    def check(self, *, timeout: float) -> str:
        """GET ``/models``: proves the endpoint answers and accepts the key."""
        return _check_models(self, f"{self.base_url}/models", timeout)


class AnthropicProvider:
    """Anthropic's Messages API (``/v1/messages``)."""

    name = "anthropic"

    def __init__(
        self,
        *,
        policy: OutboundPolicy,
        api_key: str,
        base_url: str | None = None,
        version: str | None = None,
    ) -> None:
        self.policy = policy
        self.base_url = (base_url or DEFAULT_ANTHROPIC_BASE_URL).rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[:-3]
        self.headers = {
            "Content-Type": "application/json",
            "x-api-key": api_key,
            "anthropic-version": version or ANTHROPIC_VERSION,
        }

    def complete(
        self,
        *,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int | None,
        temperature: float | None,
        timeout: float,
    ) -> Completion:
        """POST ``/v1/messages`` (the system prompt is a top-level field there)."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
            "messages": [m for m in messages if m["role"] != "system"],
        }
        if system:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = min(temperature, 1.0)
        reply = _call(
            self.name,
            self.policy,
            "POST",
            f"{self.base_url}/v1/messages",
            headers=self.headers,
            body=body,
            timeout=timeout,
        )
        try:
            blocks = reply["content"]
            text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderUnavailable(f"anthropic reply has no content: {reply!r:.300}") from exc
        usage = reply.get("usage") or {}
        return Completion(
            text=text,
            model=str(reply.get("model") or model),
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
        )

    def check(self, *, timeout: float) -> str:
        """GET ``/v1/models``: proves the endpoint answers and accepts the key."""
        return _check_models(self, f"{self.base_url}/v1/models", timeout)


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


def check_base_url(provider: str, credential: ResolvedCredential, base_url: str) -> None:
    """Refuse a step ``baseUrl`` that would send ``credential``'s key to another destination
    than the one stored with it: the credential's own ``baseUrl``, else the vendor's API.

    Same origin (scheme, host and port) is the boundary; the path may differ.
    """
    default = DEFAULT_OPENAI_BASE_URL if provider == "openai" else DEFAULT_ANTHROPIC_BASE_URL
    stored = credential.settings.get("base_url") or default
    if not same_origin(base_url, stored):
        raise StepError(
            f"baseUrl {origin(base_url)} is not where credential {credential.name!r} may be "
            f"sent ({origin(stored)}): a credential's key goes only to the base URL stored "
            "with it; remove baseUrl, or use a credential whose baseUrl is that server"
        )


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
            return _reply({"text": completion.text}, completion.model, usage)
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
        return _reply({"json": value}, completion.model, usage)

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
            used = completion.input_tokens + completion.output_tokens
            self.limiter.settle(bucket, limits, extra_tokens=used - estimate if used else 0)
        return completion


def _remaining(ctx: Any) -> float:
    seconds = ctx.remaining_seconds() if ctx is not None else None
    return float("inf") if seconds is None else float(seconds)


def _reply(value: dict[str, Any], model: str, usage: list[int]) -> dict[str, Any]:
    return {**value, "model": model, "usage": {"inputTokens": usage[0], "outputTokens": usage[1]}}


def template_reply(config: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The offline ``template`` provider: the rendered prompt is the reply (JSON when asked)."""
    model = config.get("model") or "template"
    usage = [count_words(prompt), count_words(prompt)]
    if config.get("format") != "json":
        return _reply({"text": prompt}, model, usage)
    value, problem = parse_json_reply(prompt, config.get("json_schema"))
    if problem:
        raise StepError(f"template provider: {problem}")
    return _reply({"json": value}, model, usage)
