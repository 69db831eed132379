"""Signed webhook delivery per the Standard Webhooks scheme (``webhook-id``,
``webhook-timestamp``, ``webhook-signature``), using the ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from steps.clients import ResolvedCredential
from steps.clients.outbound import OutboundPolicy, OutboundResponse, origin, request, same_origin
from steps.errors import StepError, TransientError
from steps.retry import retry_after_seconds

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
    pin_origin: bool = False,
) -> OutboundResponse:
    """POST ``payload`` once, signed when there is a ``secret``; ``message_id`` is also sent as
    ``Idempotency-Key`` for receivers that know that header instead. ``pin_origin``: it
    carries a credential's headers, so it is not redirected to another origin."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    sent = {k: v for k, v in (headers or {}).items() if k.lower() not in RESERVED_HEADERS}
    sent.update({"Content-Type": "application/json", "Idempotency-Key": message_id})
    if secret:
        sent.update(signature_headers(secret, message_id=message_id, body=body))
    else:
        sent["webhook-id"] = message_id
    return request(
        policy, "POST", url, content=body, headers=sent, timeout=timeout, pin_origin=pin_origin
    )


def deliver(
    policy: OutboundPolicy,
    url: str,
    payload: Any,
    *,
    message_id: str,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    remaining: Callable[[], float] = lambda: float("inf"),
    pin_origin: bool = False,
) -> OutboundResponse:
    """Deliver once: the response to a 2xx; ``TransientError`` (with the receiver's
    ``Retry-After``) on 408/429/5xx and transport failures; ``StepError`` on another 4xx.

    One request per call: the step's retry policy (``settings.retry``) alone decides whether
    there is another, so ``maxAttempts`` bounds the requests a receiver sees. Retrying is safe
    because every attempt carries the same ``webhook-id``: the receiver dedupes.
    """
    where = origin(url)
    response = post_event(
        policy,
        url,
        payload,
        message_id=message_id,
        secret=secret,
        headers=headers,
        timeout=min(timeout, max(1.0, remaining())),
        pin_origin=pin_origin,
    )
    status = response.status_code
    if 200 <= status < 300:
        return response
    message = f"{where} answered {status}: {response.snippet(200)}"
    if status in (408, 429) or status >= 500:
        raise TransientError(message, retry_after=retry_after_seconds(response.headers))
    raise StepError(message)


def credential_url(credential: ResolvedCredential, url: str | None) -> str:
    """Where a webhook credential may be used for a step that names ``url``.

    A credential's secret goes only to the destination stored with it: with a stored ``url``,
    the step may name only a URL of the same origin (scheme, host and port), else this
    refuses. Without a stored ``url`` the credential may sign for any URL (the signing
    secret never leaves the process: only a signature of each body is sent), but it may not
    carry ``headers``, which would be sent verbatim.
    """
    stored = credential.data.get("url")
    if stored:
        if url and not same_origin(url, stored):
            raise StepError(
                f"credential {credential.name!r} may only be sent to {origin(stored)}, where "
                f"its url points, not to {origin(url)}; remove the url or use another credential"
            )
        return str(url or stored)
    if not url:
        raise StepError(f"credential {credential.name!r} has no url and the step names none")
    if credential.data.get("headers"):
        raise StepError(
            f"credential {credential.name!r} carries headers but no url: its headers are sent "
            "only to a url stored with them; add the url to the credential"
        )
    return url
