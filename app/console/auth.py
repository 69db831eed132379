"""Console authentication: an API key signs a browser in; its role gates every page.

After sign-in the browser holds only a random session id in an HttpOnly, SameSite=Strict
cookie (Secure over HTTPS). Each request resolves it to the key's row and sets the same
``g.caller`` the API's Bearer authentication sets, so services and role checks behave
exactly as they do for the API. Every POST must carry the session's CSRF token.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, redirect, request, url_for
from sqlmodel import col, select
from werkzeug.wrappers import Response

from app.console.sessions import (
    ConsoleSession,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    new_csrf_token,
    new_session_id,
)
from app.db import db_session
from app.keys import KEY_PREFIX, Caller, hash_key
from app.models import ApiKey

COOKIE = "conveyor_console"
CSRF_FIELD = "csrf_token"
F = TypeVar("F", bound=Callable[..., Any])


def init_store(app: Flask) -> None:
    """Give the app its session store: Redis when configured, else this process's memory."""
    settings = app.config["CONVEYOR"]
    store: SessionStore
    if settings.redis_url:
        from app.queue import redis_connection

        store = RedisSessionStore(redis_connection(settings.redis_url))
    else:
        store = MemorySessionStore()
    app.extensions["conveyor.console_sessions"] = store


def _store() -> SessionStore:
    return current_app.extensions["conveyor.console_sessions"]  # type: ignore[no-any-return]


def find_key(key: str) -> ApiKey | None:
    """The API key row for a full key, or None (the same digest lookup as the API's)."""
    key = key.strip()
    if not key.startswith(KEY_PREFIX):
        return None
    digest = hash_key(key)
    row = db_session().exec(select(ApiKey).where(col(ApiKey.key_hash) == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return row


def load_session() -> None:
    """Before each console request: find the browser's session and, if signed in, its key."""
    g.console_session_id = None
    g.console_session = None
    sid = request.cookies.get(COOKIE)
    if not sid:
        return
    session = _store().get(sid)
    if session is None:
        return
    g.console_session_id, g.console_session = sid, session
    if session.key_id:
        row = db_session().get(ApiKey, session.key_id)
        if row is None:  # the key was revoked: this browser is signed out
            _store().delete(sid)
            g.console_session_id = g.console_session = None
            return
        g.caller = Caller(row.id, row.workspace_id, row.role, row.name, row.key_prefix)


def ensure_session() -> ConsoleSession:
    """The browser's session, created (signed out, with a CSRF token) when it has none."""
    if g.get("console_session") is None:
        g.console_session_id = new_session_id()
        g.console_session = ConsoleSession(csrf_token=new_csrf_token())
        _store().put(g.console_session_id, g.console_session)
        g.console_set_cookie = True
    return g.console_session  # type: ignore[no-any-return]


def save_session() -> None:
    """Write the current session back (after adding a notice)."""
    if g.get("console_session_id") and g.get("console_session") is not None:
        _store().put(g.console_session_id, g.console_session)


def take_notices() -> list[list[str]]:
    """The session's one-time notices, removed as they are read (templates call this)."""
    session = g.get("console_session")
    if session is None or not session.notices:
        return []
    notices, session.notices = session.notices, []
    save_session()
    return notices


def csrf_token() -> str:
    """The CSRF token forms must send back (templates call this)."""
    return ensure_session().csrf_token


def check_csrf() -> None:
    """Refuse (403) a state-changing request without this session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    session = g.get("console_session")
    sent = request.form.get(CSRF_FIELD, "")
    if session is None or not sent or not hmac.compare_digest(sent, session.csrf_token):
        abort(403, description="The form's CSRF token is missing or stale; reload the page.")


def sign_in(row: ApiKey) -> None:
    """Start a signed-in session under a new id (the old one is dropped: no fixation)."""
    if g.get("console_session_id"):
        _store().delete(g.console_session_id)
    g.console_session_id = new_session_id()
    g.console_session = ConsoleSession(csrf_token=new_csrf_token(), key_id=row.id)
    _store().put(g.console_session_id, g.console_session)
    g.console_set_cookie = True


def sign_out() -> None:
    """End the session and clear the cookie."""
    if g.get("console_session_id"):
        _store().delete(g.console_session_id)
    g.console_session_id = g.console_session = None
    g.console_clear_cookie = True


def _over_https() -> bool:
    """HTTPS here, or at a TLS-terminating proxy that says so. Trusting the header can only
    add ``Secure`` (the browser then withholds the cookie over plain HTTP), never remove it."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.is_secure or forwarded == "https"


def set_cookie(response: Response) -> Response:
    """After each console request: write or clear the session cookie when it changed."""
    if g.get("console_clear_cookie"):
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="Strict")
    elif g.get("console_set_cookie") and g.get("console_session_id"):
        response.set_cookie(
            COOKIE,
            g.console_session_id,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=_over_https(),
        )
    return response


def signed_in_caller() -> Caller | None:
    """The signed-in key, or None."""
    return g.get("caller")


def _open_audit(caller: Caller, audit: tuple[str, Any, str | None], kwargs: dict[str, Any]) -> None:
    """Give a console write the same audit entry as its API twin (``via: console``)."""
    from app.db import db_session
    from app.services.audit import AuditScope, camelcase, open_scope

    action, model, id_arg = audit
    details = {camelcase(k): str(v) for k, v in kwargs.items() if k != id_arg}
    scope = AuditScope(
        session=None,
        actor=caller,
        action=action,
        resource_type=action.split(".", 1)[0],
        resource_id=str(kwargs[id_arg]) if id_arg else None,
        details={**details, "via": "console"},
        model=model,
    )
    open_scope(db_session(), scope)


def require(role: str, audit: tuple[str, Any, str | None] | None = None) -> Callable[[F], F]:
    """View decorator: signed in (else to the sign-in page) with ``role`` or above (else 403).

    ``audit`` is ``(action, model, id view-arg)``: a POST to the view leaves the audit entry
    the matching API write leaves, in the same transaction as its write.
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            caller = signed_in_caller()
            if caller is None:
                if request.method == "GET":
                    return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
                abort(401, description="Sign in first.")
            if not caller.has_role(role):
                abort(
                    403, description=f"This needs the '{role}' role; this key is '{caller.role}'."
                )
            if audit is not None and request.method == "POST":
                _open_audit(caller, audit, kwargs)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
