"""Review gates: pending entities with their preview, decided in bulk."""

from __future__ import annotations

from typing import Any

from flask import abort, redirect, render_template, request

from app.console import auth, queries
from app.console.blueprint import bp, caller, notice, safe_next
from app.db import db_session
from app.models import Approval
from app.queue import get_queue

APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")


@bp.route("/approvals")
@auth.require("viewer")
def approvals() -> Any:
    """Entities waiting at review gates, with their preview; decide many at once."""
    session = db_session()
    workspace_id = caller().workspace_id
    status = request.args.get("status") or "pending"
    if status not in APPROVAL_STATUSES:
        abort(400, description=f"Unknown approval status {status!r}.")
    page = queries.approvals(
        session,
        workspace_id,
        run_id=request.args.get("run") or None,
        workflow_id=request.args.get("workflow") or None,
        status=status,
        after=request.args.get("after") or None,
    )
    return render_template(
        "console/approvals.html",
        page=page,
        approval_status=status,
        statuses=APPROVAL_STATUSES,
        args=request.args,
        workflow_names=queries.workflow_names(session, workspace_id),
    )


@bp.route("/approvals/decide", methods=["POST"])
@auth.require("executor", audit=("approval.decided", Approval, None))
def decide_approvals() -> Any:
    """Approve or reject the selected approvals through the approvals service."""
    from app.services import approvals as approvals_service

    decision = request.form.get("decision")
    ids = request.form.getlist("ids")
    back = safe_next(request.form.get("next"))
    if decision not in ("approve", "reject"):
        abort(400, description="Choose Approve selected or Reject selected.")
    if not ids:
        notice("Select at least one entity first.", "error")
        return redirect(back)
    decided = approvals_service.decide_approvals(
        session=db_session(),
        queue=get_queue(),
        workspace_id=caller().workspace_id,
        decision=decision,
        ids=ids,
        comment=request.form.get("comment") or None,
        decided_by=caller().key_id,
    )
    verb = "Approved" if decision == "approve" else "Rejected"
    skipped = len(set(ids)) - decided
    notice(f"{verb} {decided}." + (f" {skipped} were already decided." if skipped else ""))
    return redirect(back)
