"""``Idempotency-Key``: a retried write replays the first response instead of acting twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.errors import Conflict, ValidationFailed
from app.models import IdempotencyRecord

MAX_KEY_LENGTH = 255


def request_hash(body: Any) -> str:
    """A fingerprint of the request body, to refuse a key reused for another request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def idempotent(
    *,
    session: Session,
    key: str | None,
    workspace_id: str,
    scope: str,
    body: Any,
    action: Callable[[], tuple[Any, int]],
) -> tuple[Any, int, bool]:
    """Run ``action`` once per idempotency ``key``; returns ``(response, status, replayed)``.

    ``key`` is the request's ``Idempotency-Key`` header (``None``: no key, act every time).

    The key's record is inserted in the same transaction as the action's writes, so a
    concurrent request with the same key blocks on the unique index and then replays.
    ``action`` must flush but not commit; this function commits.
    """
    if not key:
        response, status = action()
        session.commit()
        return response, status, False
    if len(key) > MAX_KEY_LENGTH:
        raise ValidationFailed(
            "Idempotency-Key is too long.", {"Idempotency-Key": [f"At most {MAX_KEY_LENGTH}."]}
        )
    fingerprint = request_hash(body)
    replay = _stored(session, workspace_id, scope, key, fingerprint)
    if replay is not None:
        return replay
    try:
        record = IdempotencyRecord(
            workspace_id=workspace_id, scope=scope, key=key, request_hash=fingerprint
        )
        session.add(record)
        session.flush()
        response, status = action()
        record.response = response
        record.status_code = status
        session.commit()
        return response, status, False
    except IntegrityError:
        session.rollback()
        replay = _stored(session, workspace_id, scope, key, fingerprint)
        if replay is None:
            raise Conflict("A request with this Idempotency-Key is in progress.") from None
        return replay


def _stored(
    session: Session, workspace_id: str, scope: str, key: str, fingerprint: str
) -> tuple[Any, int, bool] | None:
    """The stored response for this key, if the first request finished."""
    record = session.exec(
        select(IdempotencyRecord).where(
            IdempotencyRecord.workspace_id == workspace_id,
            IdempotencyRecord.scope == scope,
            IdempotencyRecord.key == key,
        )
    ).first()
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise ValidationFailed(
            "This Idempotency-Key was used with a different request body.",
            {"Idempotency-Key": ["Reused with a different body."]},
        )
    if record.status_code is None:
        raise Conflict("A request with this Idempotency-Key is in progress.")
    return record.response, record.status_code, True
