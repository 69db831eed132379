"""``/api/v1/api-keys``: the workspace's keys (admin)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.schemas.api_keys import ApiKeyCreatedSchema, ApiKeySchema
from app.services import workspaces

URL_PREFIX = "/api-keys"
blp = Blueprint("api_keys", __name__, description="API keys (admin only).")


@blp.route("")
class ApiKeys(MethodView):
    @require_role("admin")
    @blp.response(200, ApiKeySchema(many=True))
    def get(self) -> Any:
        """List the workspace's API keys (prefix only)"""
        return workspaces.list_api_keys(
            session=db_session(), workspace_id=current_caller().workspace_id
        )

    @require_role("admin")
    @blp.arguments(ApiKeySchema)
    @blp.response(201, ApiKeyCreatedSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create an API key; the full key is returned only in this response"""
        session = db_session()
        row, key = workspaces.create_api_key(
            session=session,
            workspace_id=current_caller().workspace_id,
            name=data["name"],
            role=data["role"],
        )
        session.commit()
        return {**row.model_dump(), "key": key}


@blp.route("/<key_id>")
class ApiKeysById(MethodView):
    @require_role("admin")
    @blp.response(204)
    def delete(self, key_id: str) -> None:
        """Revoke an API key"""
        workspaces.delete_api_key(
            session=db_session(), workspace_id=current_caller().workspace_id, key_id=key_id
        )
