"""``/api/v1/approvals``: entities waiting at review gates, and the decisions on them."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Approval
from app.pagination import keyset_page, page_headers
from app.queue import get_queue
from app.schemas.approvals import (
    ApprovalQueryArgsSchema,
    ApprovalSchema,
    DecidedSchema,
    DecideSchema,
    DecisionSchema,
)
from app.services import approvals as service
from app.services import audit

URL_PREFIX = "/approvals"
blp = Blueprint(
    "approvals",
    __name__,
    description="Review gates: entities waiting at an `approval` step. Approve or reject one, "
    "a selection, or all of a run's step; each approval is decided exactly once.",
)


def approval_view(approval: Approval) -> dict[str, Any]:
    """An approval as the API shows it."""
    return {
        "id": approval.id,
        "run_id": approval.run_id,
        "workflow_id": approval.workflow_id,
        "step_id": approval.step_id,
        "entity_id": approval.entity_id,
        "status": approval.status,
        "preview": approval.preview,
        "instructions": approval.instructions,
        "assignees": approval.assignees or [],
        "expires_at": approval.expires_at,
        "created_at": approval.created_at,
        "decided_at": approval.decided_at,
        "decided_by": approval.decided_by,
        "comment": approval.comment,
    }


@blp.route("")
class Approvals(MethodView):
    @require_role("viewer")
    @blp.arguments(ApprovalQueryArgsSchema, location="query")
    @blp.response(200, ApprovalSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List approvals, oldest first, filtered by runId, workflowId, stepId or status"""
        query = select(Approval).where(col(Approval.workspace_id) == current_caller().workspace_id)
        for name, column in (
            ("run_id", Approval.run_id),
            ("workflow_id", Approval.workflow_id),
            ("step_id", Approval.step_id),
            ("status", Approval.status),
        ):
            if name in args:
                query = query.where(col(column) == args[name])
        rows = [
            approval_view(a)
            for a in db_session().scalars(keyset_page(query, col(Approval.id), args))
        ]
        return page_headers(rows, args, "id")


@blp.route("/decide")
class ApprovalsDecide(MethodView):
    @require_role("executor")
    @blp.arguments(DecideSchema)
    @blp.response(200, DecidedSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Approve or reject many: ids, or every pending approval of a run (at a step)"""
        caller = current_caller()
        selection = data.get("filter") or {}
        audit.annotate(
            db_session(),
            decision=data["decision"],
            **({"runId": selection["run_id"]} if "run_id" in selection else {}),
            **({"stepId": selection["step_id"]} if "step_id" in selection else {}),
        )
        decided = service.decide_approvals(
            session=db_session(),
            queue=get_queue(),
            workspace_id=caller.workspace_id,
            decision=data["decision"],
            ids=data.get("ids"),
            run_id=selection.get("run_id"),
            step_id=selection.get("step_id"),
            comment=data.get("comment"),
            decided_by=caller.key_id,
        )
        return {"decided": decided}


@blp.route("/<approval_id>")
class ApprovalsById(MethodView):
    @require_role("viewer")
    @blp.response(200, ApprovalSchema)
    def get(self, approval_id: str) -> Any:
        """Get an approval with its preview"""
        return approval_view(
            service.get_approval(
                session=db_session(),
                workspace_id=current_caller().workspace_id,
                approval_id=approval_id,
            )
        )


def _decide_one(approval_id: str, decision: str, comment: str | None) -> dict[str, Any]:
    caller = current_caller()
    return approval_view(
        service.decide_approval(
            session=db_session(),
            queue=get_queue(),
            workspace_id=caller.workspace_id,
            approval_id=approval_id,
            decision=decision,
            comment=comment,
            decided_by=caller.key_id,
        )
    )


@blp.route("/<approval_id>/approve")
class ApprovalApprove(MethodView):
    @require_role("executor")
    @blp.arguments(DecisionSchema)
    @blp.response(200, ApprovalSchema)
    @blp.alt_response(409, description="Already decided")
    def post(self, data: dict[str, Any], approval_id: str) -> Any:
        """Approve: the entity continues at the next step within seconds"""
        return _decide_one(approval_id, "approve", data.get("comment"))


@blp.route("/<approval_id>/reject")
class ApprovalReject(MethodView):
    @require_role("executor")
    @blp.arguments(DecisionSchema)
    @blp.response(200, ApprovalSchema)
    @blp.alt_response(409, description="Already decided")
    def post(self, data: dict[str, Any], approval_id: str) -> Any:
        """Reject: the entity ends per the gate's onReject (stop: completed, fail: failed)"""
        return _decide_one(approval_id, "reject", data.get("comment"))
