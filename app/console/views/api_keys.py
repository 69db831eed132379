"""API keys (admins): create (shown once) and revoke."""

from __future__ import annotations

from typing import Any

from flask import make_response, redirect, render_template, request, url_for

from app.console import auth
from app.console.blueprint import bp, caller, notice
from app.db import db_session
from app.models import ApiKey
from app.services import workspaces as workspaces_service
from app.statuses import ROLES


def _keys_page(new_key: str | None = None, error: str | None = None) -> Any:
    rows = workspaces_service.list_api_keys(
        session=db_session(), workspace_id=caller().workspace_id
    )
    response = make_response(
        render_template(
            "console/api_keys.html", keys=rows, roles=ROLES, new_key=new_key, error=error
        ),
        422 if error else 200,
    )
    return response


@bp.route("/api-keys")
@auth.require("admin")
def api_keys() -> Any:
    """The workspace's keys (prefixes only)."""
    return _keys_page()


@bp.route("/api-keys", methods=["POST"])
@auth.require("admin", audit=("api_key.created", ApiKey, None))
def create_api_key() -> Any:
    """Create a key and show it on this response only."""
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    if not name or len(name) > 200 or role not in ROLES:
        return _keys_page(error="Give the key a name (up to 200 characters) and a role.")
    session = db_session()
    _, key = workspaces_service.create_api_key(
        session=session, workspace_id=caller().workspace_id, name=name, role=role
    )
    session.commit()
    return _keys_page(new_key=key)


@bp.route("/api-keys/<key_id>/delete", methods=["POST"])
@auth.require("admin", audit=("api_key.revoked", ApiKey, "key_id"))
def delete_api_key(key_id: str) -> Any:
    """Revoke a key at once (its console sessions end on their next request)."""
    workspaces_service.delete_api_key(
        session=db_session(), workspace_id=caller().workspace_id, key_id=key_id
    )
    notice("API key revoked.")
    return redirect(url_for("console.api_keys"))
