"""Triggers with their next fire time, and a trigger's events."""

from __future__ import annotations

from typing import Any

from flask import render_template

from app.console import auth, queries
from app.console.blueprint import bp, caller
from app.db import db_session
from app.services import triggers as triggers_service


@bp.route("/triggers")
@auth.require("viewer")
def triggers() -> Any:
    """Every trigger with its next fire time."""
    session = db_session()
    workspace_id = caller().workspace_id
    return render_template(
        "console/triggers.html",
        triggers=queries.triggers(session, workspace_id),
        workflow_names=queries.workflow_names(session, workspace_id),
    )


@bp.route("/triggers/<trigger_id>")
@auth.require("viewer")
def trigger(trigger_id: str) -> Any:
    """A trigger and its events: fires, queued fires and skips with their reasons."""
    session = db_session()
    row = triggers_service.get_trigger(
        session=session, workspace_id=caller().workspace_id, trigger_id=trigger_id
    )
    return render_template(
        "console/trigger.html",
        trigger=row,
        events=queries.trigger_events(session, row.id),
        workflow_names=queries.workflow_names(session, row.workspace_id),
    )
