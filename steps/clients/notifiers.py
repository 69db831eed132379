"""Notification senders: a signed JSON webhook and a Slack incoming webhook.

Each call sends one request; the step's retry policy (``settings.retry``) decides whether
another is sent. Notifications are at most once per (run, entity, step): a failure after the
request may have reached the peer is final (not retryable), except for the webhook channel,
whose receivers dedupe on ``webhook-id``. Failures where nothing was sent stay retryable.
Email is in ``steps.clients.mail``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from steps.clients import webhooks
from steps.clients.outbound import OutboundPolicy, origin, request
from steps.errors import OutboundTimeout, StepError, TransientError
from steps.retry import retry_after_seconds


def send_slack(policy: OutboundPolicy, url: str, *, text: str, timeout: float = 10.0) -> None:
    """POST ``{"text": ...}`` to a Slack incoming-webhook URL."""
    where = origin(url)
    try:
        response = request(policy, "POST", url, json={"text": text}, timeout=timeout)
    except OutboundTimeout as exc:
        raise StepError(
            f"{exc.message}; the Slack message may or may not have been posted"
        ) from exc
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"Slack ({where}) answered {status}: {response.snippet(200)}"
    if status == 429:  # refused, so nothing was posted: safe to retry
        raise TransientError(message, retry_after=retry_after_seconds(response.headers))
    raise StepError(message)


def send_webhook(
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
) -> int:
    """POST a (signed) notification event once; the status code it was accepted with.

    Failures worth retrying raise ``TransientError``; the step's retry policy decides.
    """
    response = webhooks.deliver(
        policy,
        url,
        payload,
        message_id=message_id,
        secret=secret,
        headers=headers,
        timeout=timeout,
        remaining=remaining,
        pin_origin=pin_origin,
    )
    return response.status_code
