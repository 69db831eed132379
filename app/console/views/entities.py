"""The entities browser and an entity's page."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import abort, render_template, request

from app.console import auth, queries
from app.console.blueprint import bp, caller
from app.db import db_session
from app.services import entities as entities_service


def _parse_date(value: str | None) -> int | None:
    """``2026-11-29`` or ``2026-11-29T10:30`` (UTC) → epoch ms."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        abort(400, description=f"Not a date: {value!r}.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@bp.route("/entities")
@auth.require("viewer")
def entities() -> Any:
    """Browse entities by type, status and update time, a cursor page at a time."""
    session = db_session()
    workspace_id = caller().workspace_id
    page = queries.entities(
        session,
        workspace_id,
        entity_type_id=request.args.get("type") or None,
        status=request.args.get("status") or None,
        updated_since=_parse_date(request.args.get("updated_since")),
        after=request.args.get("after") or None,
    )
    types = queries.entity_types(session, workspace_id)
    return render_template(
        "console/entities.html",
        page=page,
        types=types,
        type_names={t.id: t.name for t in types},
        args=request.args,
    )


@bp.route("/entities/<entity_id>")
@auth.require("viewer")
def entity(entity_id: str) -> Any:
    """An entity's data and the runs that touched it."""
    session = db_session()
    row = entities_service.get_entity(
        session=session, workspace_id=caller().workspace_id, entity_id=entity_id
    )
    entity_type = entities_service.get_entity_type(
        session=session, workspace_id=row.workspace_id, type_id=row.entity_type_id
    )
    return render_template(
        "console/entity.html",
        entity=row,
        entity_type=entity_type,
        runs=queries.entity_runs(session, row.id),
        workflow_names=queries.workflow_names(session, row.workspace_id),
    )
