"""Redaction of secrets from logs, outputs and errors."""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
MAX_REMEMBERED_SECRETS = 10_000  # credential values a process keeps for scrubbing its logs
_PATTERNS = [
    re.compile(r"cvk_[A-Za-z0-9_\-]{8,}"),  # Conveyor API keys
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/\-]+=*"),  # bearer tokens
    re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)[^\"',}\s][^\"',}]*"),
    re.compile(r"sk-[A-Za-z0-9_\-]{16,}"),  # common LLM provider keys
]
_SECRET_KEYS = re.compile(r"(?i)^(authorization|api[_-]?key|password|secret|token|x-api-key)$")


@functools.lru_cache(maxsize=4 * MAX_REMEMBERED_SECRETS)
def secret_forms(secret: str) -> tuple[str, ...]:
    """``secret`` as it may appear in text: as is, JSON-escaped (inside a string literal,
    ASCII-only or not) and URL-encoded (path-safe, fully, and as a form value); longest first."""
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret),
        quote(secret, safe=""),
        quote_plus(secret),
    }
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with known secrets (in any of their ``secret_forms``) and secret-looking
    tokens replaced."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in secret_forms(secret):
                text = text.replace(form, REDACTED)
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
_remembered: dict[str, None] = {}
_remembered_lock = threading.Lock()


_sorted: tuple[str, ...] | None = ()  # remembered, longest first; None when it needs a rebuild


def remember_secrets(values: Iterable[str]) -> None:
    """Add values to the process-wide set that ``RedactingFilter`` removes from logs."""
    global _sorted
    with _remembered_lock:
        for value in values:
            if value and len(value) >= 4 and value not in _remembered:
                _remembered[value] = None
                _sorted = None
        while len(_remembered) > MAX_REMEMBERED_SECRETS:
            _remembered.pop(next(iter(_remembered)))


def remembered_secrets() -> tuple[str, ...]:
    """The values ``remember_secrets`` was given (longest first, so overlaps redact whole)."""
    global _sorted
    with _remembered_lock:
        if _sorted is None:  # sorted once per change, not once per log record
            _sorted = tuple(sorted(_remembered, key=len, reverse=True))
        return _sorted


def _scrub(record: logging.LogRecord) -> None:
    """Redact a record's message (and its traceback text) in place; never raises."""
    try:
        message = record.getMessage()
    except Exception:  # a broken format string is the logger's problem, not ours
        return
    try:
        secrets = remembered_secrets()
        cleaned = redact_text(message, secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: format it once, redacted.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact_text(text, secrets)
    except Exception:  # redaction must never cost the record itself
        return


class RedactingFilter(logging.Filter):
    """A logging filter that redacts remembered secrets and secret-looking tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message in place; never drops a record."""
        _scrub(record)
        return True


_factory_lock = threading.Lock()
_factory_installed = False


def _install_record_factory() -> None:
    """Scrub every record as it is made, whichever logger and handler it goes to (handlers
    added after start-up, pytest's caplog, a library's own handler)."""
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        make: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            _scrub(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        _factory_installed = True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Redact every log record of this process from now on, and put a ``RedactingFilter`` on
    every handler of ``logger`` (default: the root logger). Every entry point (the app
    factory, the CLI, workers) calls it at start; calling it again is harmless."""
    _install_record_factory()
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
