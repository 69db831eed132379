"""Redaction of secrets from logs, outputs and errors."""

from __future__ import annotations

import logging
import re
import threading
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


# Credential values decrypted in this process, so log records can be scrubbed of them even
# when they were formatted by code that did not know they were secret.
MAX_REMEMBERED_SECRETS = 10_000
_remembered: dict[str, None] = {}
_remembered_lock = threading.Lock()


def remember_secrets(values: Iterable[str]) -> None:
    """Add values to the process-wide set that ``RedactingFilter`` removes from logs."""
    with _remembered_lock:
        for value in values:
            if value and len(value) >= 4:
                _remembered[value] = None
        while len(_remembered) > MAX_REMEMBERED_SECRETS:
            _remembered.pop(next(iter(_remembered)))


def remembered_secrets() -> tuple[str, ...]:
    """The values ``remember_secrets`` was given (longest first, so overlaps redact whole)."""
    with _remembered_lock:
        return tuple(sorted(_remembered, key=len, reverse=True))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts remembered secrets and secret-looking tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drops a record."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the logger's problem, not ours
            return True
        cleaned = redact_text(message, remembered_secrets())
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Put a ``RedactingFilter`` on every handler of ``logger`` (default: the root logger)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
