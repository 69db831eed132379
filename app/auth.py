"""API keys: authentication of a request and role checks (keys themselves: ``app.keys``)."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

import flask_smorest
from flask import g, request
from sqlalchemy import update
from sqlmodel import col, select
from webargs.flaskparser import abort  # flask_smorest re-exports it untyped (not NoReturn)

from app.db import db_session
from app.ids import now_ms
from app.keys import KEY_PREFIX, Caller, hash_key
from app.models import ApiKey
from app.services import audit
from app.statuses import ROLES  # also re-exported: the console lists them

# lastUsedAt is written at most this often per key, so reads do not all become writes.
LAST_USED_RESOLUTION_MS = 60_000

F = TypeVar("F", bound=Callable[..., Any])

MISSING_KEY = "Missing or malformed API key: send 'Authorization: Bearer cvk_...'."
INVALID_KEY = "Invalid API key."


def forbidden_message(role: str, held: str) -> str:
    """The 403 message: which role the operation needs, which the key has."""
    return f"This needs the '{role}' role; this key is '{held}'."


def _error_response_doc(description: str, code: int, status: str, message: str) -> Any:
    """An OpenAPI response in the one error shape, with its example."""
    example = {"code": code, "status": status, "message": message, "errors": {}}
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Error"},
                "example": example,
            }
        },
    }


def auth_responses(role: str) -> dict[str, Any]:
    """The 401 and 403 a ``require_role(role)`` operation can answer, for its OpenAPI doc."""
    roles = list(ROLES)
    below = roles[roles.index(role) - 1] if roles.index(role) > 0 else role
    return {
        "401": _error_response_doc(
            "No API key, or not a valid one", 401, "Unauthorized", MISSING_KEY
        ),
        "403": _error_response_doc(
            f"The key's role is below '{role}', the role this operation needs"
            if below != role
            else f"'{role}' is the lowest role, so a valid key is not refused here",
            403,
            "Forbidden",
            forbidden_message(role, below),
        ),
    }


def authenticate() -> Caller:
    """Resolve the Bearer key of the current request, or abort with 401."""
    caller: Caller | None = g.get("caller")
    if caller is not None:
        return caller
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX):
        abort(401, message=MISSING_KEY)
    digest = hash_key(token)
    session = db_session()
    row = session.exec(select(ApiKey).where(ApiKey.key_hash == digest)).first()
    # The lookup is by digest; compare again in constant time so timing reveals nothing.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        abort(401, message=INVALID_KEY)
    now = now_ms()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION_MS:
        session.execute(update(ApiKey).where(col(ApiKey.id) == row.id).values(last_used_at=now))
        session.commit()
    caller = Caller(row.id, row.workspace_id, row.role, row.name, row.key_prefix)
    g.caller = caller
    return caller


def require_role(role: str) -> Callable[[F], F]:
    """View decorator: authenticate, then demand ``role`` or above (403 otherwise).

    The operation's OpenAPI doc gets its 401 and 403 responses here, so every view that
    declares its role documents them (as bemserver-api's ``login_required`` does).
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = authenticate()
            if not caller.has_role(role):
                abort(403, message=forbidden_message(role, caller.role))
            # The actor context of the audit log: a write's entry is written with its commit.
            audit.begin_request(db_session(), caller, request_facts())
            return view(*args, **kwargs)

        documented = flask_smorest.Blueprint.doc(responses=auth_responses(role))(wrapper)
        return documented  # type: ignore[no-any-return]

    return decorator


def request_facts() -> audit.RequestFacts:
    """The current request as the audit log needs it (the body's top-level names only, and
    only for PUT/PATCH, which list the fields they change)."""
    body_keys: frozenset[str] = frozenset()
    if request.method in ("PUT", "PATCH"):
        body = request.get_json(silent=True, cache=True)
        if isinstance(body, dict):
            body_keys = frozenset(str(k) for k in body)
    return audit.RequestFacts(
        method=request.method,
        rule=request.url_rule.rule if request.url_rule is not None else None,
        blueprint=request.blueprint or "",
        view_args=dict(request.view_args or {}),
        query=dict(request.args.items()),
        body_keys=body_keys,
    )


def current_caller() -> Caller:
    """The caller authenticated for this request."""
    return authenticate()
