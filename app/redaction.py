"""Redaction of secrets from logs, outputs and errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[REDACTED]"
_PATTERNS = [
    re.compile(r"cvk_[A-Za-z0-9_\-]{8,}"),  # Conveyor API keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"),  # bearer tokens
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\s][^\"',}]*"),
    re.compile(r"sk-[A-Za-z0-9_\-]{16,}"),  # common LLM provider keys
]
_SECRET_KEYS = re.compile(r"(?i)^(authorization|api[_-]?key|password|secret|token|x-api-key)$")


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets and secret-looking tokens replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of ``value`` (str, dict, list) with secrets redacted, recursively."""
    secrets = tuple(secrets)
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEYS.match(k) else redact(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, secrets) for v in value]
    return value
