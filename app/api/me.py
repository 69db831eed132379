"""``/api/v1/me``: who is calling."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.schemas.api_keys import MeSchema
from app.services.workspaces import get_workspace

URL_PREFIX = "/me"
blp = Blueprint("me", __name__, description="The calling key and its workspace.")


@blp.route("")
class Me(MethodView):
    @require_role("viewer")
    @blp.response(200, MeSchema)
    def get(self) -> Any:
        """The workspace and the calling key"""
        caller = current_caller()
        workspace = get_workspace(session=db_session(), workspace_id=caller.workspace_id)
        return {
            "workspace": workspace,
            "key": {
                "id": caller.key_id,
                "name": caller.name,
                "role": caller.role,
                "key_prefix": caller.key_prefix,
            },
        }
