"""Credentials: create, test, delete; secrets are never shown back."""

from __future__ import annotations

import json
from typing import Any

import marshmallow as ma
from flask import current_app, redirect, render_template, request, url_for

from app.console import auth
from app.console.blueprint import bp, caller, notice
from app.db import db_session
from app.errors import ConveyorError
from app.models import Credential
from app.schemas.credentials import CREDENTIAL_TYPES, CredentialSchema
from app.services import credentials as credentials_service
from steps.clients.outbound import OutboundPolicy


def _json_field(name: str, label: str) -> Any:
    raw = request.form.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConveyorError(f"{label} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConveyorError(f"{label} must be a JSON object.")
    return value


def _credentials_page(error: str | None = None, status: int = 200) -> Any:
    rows = credentials_service.list_credentials(
        session=db_session(), workspace_id=caller().workspace_id
    )
    form = {k: v for k, v in request.form.items() if k in ("name", "type", "settings")}
    page = render_template(
        "console/credentials.html",
        credentials=rows,
        types=CREDENTIAL_TYPES,
        error=error,
        form=form,
    )
    return page, status


@bp.route("/credentials")
@auth.require("viewer")
def credentials() -> Any:
    """The workspace's credentials (never their secrets)."""
    return _credentials_page()


@bp.route("/credentials", methods=["POST"])
@auth.require("editor", audit=("credential.created", Credential, None))
def create_credential() -> Any:
    """Create a credential from the form, loaded with the API's own schema."""
    session = db_session()
    try:
        payload = {
            "name": request.form.get("name", ""),
            "type": request.form.get("type", ""),
            "data": _json_field("data", "Secret data"),
            "settings": _json_field("settings", "Settings"),
        }
        try:
            data = CredentialSchema().load(payload)
        except ma.ValidationError as exc:
            from app.errors import flatten_errors

            errors = flatten_errors(exc.messages)
            raise ConveyorError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
            ) from exc
        row = credentials_service.create_credential(
            session=session,
            workspace_id=caller().workspace_id,
            data=data,
            box=credentials_service.secret_box(current_app.config["CONVEYOR"]),
        )
    except ConveyorError as exc:
        session.rollback()
        # The secret is never sent back, not even to the page that failed to save it.
        return _credentials_page(exc.message, 422 if exc.code < 500 else exc.code)
    notice(f"Credential {row.name!r} created.")
    return redirect(url_for("console.credentials"))


@bp.route("/credentials/<credential_id>/test", methods=["POST"])
@auth.require("editor", audit=("credential.tested", Credential, "credential_id"))
def test_credential(credential_id: str) -> Any:
    """Use the credential once for real, like the API's test."""
    settings = current_app.config["CONVEYOR"]
    session = db_session()
    result = credentials_service.check_credential(
        session=session,
        workspace_id=caller().workspace_id,
        credential_id=credential_id,
        box=credentials_service.secret_box(settings),
        policy=OutboundPolicy(settings.outbound_allow_hosts),
        url=request.form.get("url") or None,
    )
    row = credentials_service.get_credential(
        session=session, workspace_id=caller().workspace_id, credential_id=credential_id
    )
    verdict = "works" if result["ok"] else "failed"
    notice(
        f"Credential {row.name!r} {verdict}: {result['message']} ({result['duration_ms']} ms)",
        "ok" if result["ok"] else "error",
    )
    return redirect(url_for("console.credentials"))


@bp.route("/credentials/<credential_id>/delete", methods=["POST"])
@auth.require("editor", audit=("credential.deleted", Credential, "credential_id"))
def delete_credential(credential_id: str) -> Any:
    """Delete a credential."""
    credentials_service.delete_credential(
        session=db_session(), workspace_id=caller().workspace_id, credential_id=credential_id
    )
    notice("Credential deleted.")
    return redirect(url_for("console.credentials"))
