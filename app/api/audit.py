"""``/api/v1/audit``: who wrote what, newest first (admin; read-only)."""

from __future__ import annotations

from typing import Any

from flask import Response, g, request
from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import AuditEntry
from app.pagination import keyset_page, page_headers
from app.schemas.audit import AuditEntrySchema, AuditQueryArgsSchema
from app.services import audit

URL_PREFIX = "/audit"
blp = Blueprint(
    "audit",
    __name__,
    description="The audit log: one entry per write through the API, written in the same "
    "transaction as the write. Entries cannot be changed or deleted.",
)


@blp.after_app_request
def record_unwritten_success(response: Response) -> Response:
    """Successful writes that touched no table (testing a credential) are recorded after the
    response is built; every other entry rides in its write's own transaction. A replay of
    an ``Idempotency-Key`` request did nothing new."""
    session = g.get("db_session")  # the request's session (app.db), when it opened one
    if (
        session is not None
        and response.status_code < 400
        and not request.headers.get("Idempotency-Key")
    ):
        audit.record_unwritten(session)
    return response


def entry_view(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry as the API shows it."""
    return {
        "id": str(entry.id),
        "at": entry.at,
        "actor": {
            "key_id": entry.actor_key_id,
            "key_prefix": entry.actor_key_prefix,
            "role": entry.actor_role,
        },
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "details": entry.details or {},
    }


@blp.route("")
class Audit(MethodView):
    @require_role("admin")
    @blp.arguments(AuditQueryArgsSchema, location="query")
    @blp.response(200, AuditEntrySchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List audit entries, newest first, filtered by action, resource, actor or time"""
        query = select(AuditEntry).where(
            col(AuditEntry.workspace_id) == current_caller().workspace_id
        )
        filters = {
            "action": AuditEntry.action,
            "resource_type": AuditEntry.resource_type,
            "resource_id": AuditEntry.resource_id,
            "actor_key_id": AuditEntry.actor_key_id,
        }
        for name, column in filters.items():
            if name in args:
                query = query.where(col(column) == args[name])
        if "since" in args:
            query = query.where(col(AuditEntry.at) >= args["since"])
        rows = [
            entry_view(e)
            for e in db_session().scalars(
                keyset_page(query, col(AuditEntry.id), args, descending=True, key_type=int)
            )
        ]
        return page_headers(rows, args, "id")
