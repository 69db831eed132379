"""Side-effect clients that steps reach through ``ctx.services``: outbound HTTP with address
checks, LLM providers, a shared rate limiter, Standard Webhooks signing, and the notification
senders (webhook, Slack, SMTP). Pure Python: no Flask, no SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ResolvedCredential:
    """A credential as a client uses it: decrypted secret ``data`` and plain ``settings``
    (both with snake_case keys, as stored)."""

    name: str
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
