"""The chat-completion providers: any OpenAI-compatible endpoint and Anthropic's Messages
API, the HTTP call they share (status -> error class), and where a credential's key may go.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from steps.clients import ResolvedCredential
from steps.clients.llm.errors import ProviderRateLimited, ProviderRejected, ProviderUnavailable
from steps.clients.outbound import OutboundPolicy, OutboundResponse, origin, request, same_origin
from steps.errors import OutboundTimeout, OutboundUnreachable, StepError
from steps.retry import exhausted_hold_seconds, retry_after_seconds

DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
ANTHROPIC_DEFAULT_MAX_TOKENS = 1024
MAX_REPLY_BYTES = 4_000_000


@dataclass
class Completion:
    """One provider reply."""

    text: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    hold: float | None = None  # the provider said its window is used up for this long


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
) -> tuple[Any, Mapping[str, str]]:
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
        return response.json(), response.headers
    except ValueError as exc:
        raise ProviderUnavailable(
            f"{provider} answered {response.status_code} with a body that is not JSON: "
            f"{response.snippet()}"
        ) from exc


def _check_models(provider: Any, url: str, timeout: float) -> str:
    """List the provider's models at ``url``: the endpoint answers and accepts the key."""
    reply, _ = _call(
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
        reply, reply_headers = _call(
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
            hold=exhausted_hold_seconds(reply_headers),
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
        reply, reply_headers = _call(
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
            hold=exhausted_hold_seconds(reply_headers),
        )

    def check(self, *, timeout: float) -> str:
        """GET ``/v1/models``: proves the endpoint answers and accepts the key."""
        return _check_models(self, f"{self.base_url}/v1/models", timeout)


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
