"""``/api/v1/credentials``: secrets for providers and channels, write-only and encrypted."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from sqlmodel import col, select

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Credential
from app.pagination import PageArgs, keyset_page, page_headers
from app.schemas.credentials import (
    CredentialSchema,
    CredentialTestResultSchema,
    CredentialTestSchema,
    CredentialUpdateSchema,
)
from app.services import credentials as service
from steps.clients.outbound import OutboundPolicy

URL_PREFIX = "/credentials"
blp = Blueprint(
    "credentials",
    __name__,
    description="Credentials for LLM providers, SMTP, Slack and webhooks. The secret `data` "
    "is write-only: encrypted at rest (AES-256-GCM, key from CONVEYOR_SECRET_KEY) and never "
    "returned. Step configs name credentials by `name`.",
)


def _settings() -> Any:
    return current_app.config["CONVEYOR"]


@blp.route("")
class Credentials(MethodView):
    @require_role("viewer")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, CredentialSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List credentials (never their secret data)"""
        query = select(Credential).where(Credential.workspace_id == current_caller().workspace_id)
        rows = list(db_session().exec(keyset_page(query, col(Credential.id), args)))
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(CredentialSchema)
    @blp.response(201, CredentialSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create a credential; its data is encrypted and cannot be read back"""
        return service.create_credential(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            data=data,
            box=service.secret_box(_settings()),
        )


@blp.route("/<credential_id>")
class CredentialsById(MethodView):
    @require_role("viewer")
    @blp.response(200, CredentialSchema)
    def get(self, credential_id: str) -> Any:
        """Get a credential (never its secret data)"""
        return service.get_credential(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            credential_id=credential_id,
        )

    @require_role("editor")
    @blp.arguments(CredentialUpdateSchema)
    @blp.response(200, CredentialSchema)
    def put(self, data: dict[str, Any], credential_id: str) -> Any:
        """Replace a credential's name and settings, and its data when given"""
        box = service.secret_box(_settings()) if data.get("data") is not None else None
        return service.update_credential(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            credential_id=credential_id,
            data=data,
            box=box,
        )

    @require_role("editor")
    @blp.response(204)
    def delete(self, credential_id: str) -> None:
        """Delete a credential; steps naming it fail from then on"""
        service.delete_credential(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            credential_id=credential_id,
        )


@blp.route("/<credential_id>/test")
class CredentialTest(MethodView):
    @require_role("editor")
    @blp.arguments(CredentialTestSchema)
    @blp.response(200, CredentialTestResultSchema)
    def post(self, data: dict[str, Any], credential_id: str) -> Any:
        """Use the credential once for real (list models, SMTP login, or a test POST)"""
        settings = _settings()
        return service.check_credential(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            credential_id=credential_id,
            box=service.secret_box(settings),
            policy=OutboundPolicy(settings.outbound_allow_hosts),
            url=data.get("url"),
        )
