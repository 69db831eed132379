"""Signed webhook delivery per the Standard Webhooks scheme (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), using the ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from steps.clients.llm import retry_after_seconds
from steps.clients.outbound import OutboundPolicy, OutboundResponse, origin, request
from steps.errors import OutboundTimeout, OutboundUnreachable, StepError, TransientError

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
RESERVED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature"})


def check_secret(secret: str) -> str | None:
    """None when ``secret`` is a usable signing secret (``whsec_`` + base64 of 24-64 bytes),
    else what is wrong with it."""
    raw = secret.removeprefix(SECRET_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        return "must be base64, optionally prefixed with whsec_"
    if not 24 <= len(key) <= 64:
        return "must decode to 24-64 bytes"
    return None


def signature_headers(
    secret: str, *, message_id: str, body: bytes, timestamp: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``."""
    when = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, when, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def event(event_type: str, data: Any) -> dict[str, Any]:
    """A Standard Webhooks payload: ``{type, timestamp, data}``."""
    stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"type": event_type, "timestamp": stamp, "data": data}


def post_event(
    policy: OutboundPolicy,
    url: str,
    payload: Any,
    *,
    message_id: str,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> OutboundResponse:
    """POST ``payload`` once, signed when there is a ``secret``; ``message_id`` is also sent as
    ``Idempotency-Key`` for receivers that know that header instead."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    sent = {k: v for k, v in (headers or {}).items() if k.lower() not in RESERVED_HEADERS}
    sent.update({"Content-Type": "application/json", "Idempotency-Key": message_id})
    if secret:
        sent.update(signature_headers(secret, message_id=message_id, body=body))
    else:
        sent["webhook-id"] = message_id
    return request(policy, "POST", url, content=body, headers=sent, timeout=timeout)


def deliver(
    policy: OutboundPolicy,
    url: str,
    payload: Any,
    *,
    message_id: str,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    attempts: int = 3,
    backoff_seconds: float = 1.0,
    remaining: Callable[[], float] = lambda: float("inf"),
    sleep: Callable[[float], None] = time.sleep,
) -> OutboundResponse:
    """Deliver until a 2xx, retrying 408/429/5xx and transport failures with backoff.

    Retrying is safe because every attempt carries the same ``webhook-id``: the receiver
    dedupes. A 4xx other than 408/429 fails at once with the receiver's answer.
    """
    where = origin(url)
    last: TransientError | None = None
    for attempt in range(attempts):
        call_timeout = min(timeout, max(1.0, remaining()))
        try:
            response = post_event(
                policy,
                url,
                payload,
                message_id=message_id,
                secret=secret,
                headers=headers,
                timeout=call_timeout,
            )
        except (OutboundUnreachable, OutboundTimeout) as exc:
            last = exc
            delay = backoff_seconds * 2**attempt * random.uniform(0.5, 1.0)
        else:
            status = response.status_code
            if 200 <= status < 300:
                return response
            message = f"{where} answered {status}: {response.snippet(200)}"
            if status not in (408, 429) and status < 500:
                raise StepError(message)
            hint = retry_after_seconds(response.headers)
            last = TransientError(message, retry_after=hint)
            delay = (
                hint
                if hint is not None
                else backoff_seconds * 2**attempt * random.uniform(0.5, 1.0)
            )
        if attempt + 1 >= attempts or delay >= remaining() - 1:
            break
        sleep(delay)
    assert last is not None
    raise TransientError(
        f"delivery failed: {last.message} (after {attempt + 1} attempt{'s' if attempt else ''})",
        retry_after=last.retry_after,
    )
