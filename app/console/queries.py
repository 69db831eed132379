"""Read-only queries the console needs beyond the services: lists, groupings, pages.

Writes always go through ``app/services``; these only read the models, scoped to one
workspace, with keyset pages like the API's lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from app.models import (
    ApiKey,
    Approval,
    Entity,
    EntityType,
    Run,
    RunItem,
    Trigger,
    TriggerEvent,
    Workflow,
    WorkflowRevision,
)

PAGE_SIZE = 50


@dataclass
class Page:
    """One keyset page: its rows and the cursor of the next page (None at the end)."""

    rows: list[Any]
    next_cursor: str | None


def _page(rows: list[Any], limit: int, key: str) -> Page:
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        return Page(rows, str(getattr(last, key)))
    return Page(rows, None)


def workflows_with_last_run(
    session: Session, workspace_id: str
) -> list[tuple[Workflow, Run | None]]:
    """The workspace's workflows by name, each with its newest run (or None)."""
    workflows = list(
        session.scalars(
            select(Workflow)
            .where(col(Workflow.workspace_id) == workspace_id)
            .order_by(col(Workflow.name), col(Workflow.id))
        )
    )
    if not workflows:
        return []
    # Run ids are time-sortable ULIDs: the newest run of a workflow has the greatest id.
    newest = (
        select(func.max(col(Run.id)))
        .where(col(Run.workflow_id).in_([w.id for w in workflows]))
        .group_by(col(Run.workflow_id))
    )
    runs = {r.workflow_id: r for r in session.scalars(select(Run).where(col(Run.id).in_(newest)))}
    return [(w, runs.get(w.id)) for w in workflows]


def recent_runs(session: Session, workflow_id: str, limit: int = 20) -> list[Run]:
    """A workflow's newest runs."""
    query = (
        select(Run)
        .where(col(Run.workflow_id) == workflow_id)
        .order_by(col(Run.id).desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def workflow_triggers(session: Session, workflow_id: str) -> list[Trigger]:
    """The triggers that start a workflow."""
    query = select(Trigger).where(col(Trigger.workflow_id) == workflow_id)
    return list(session.scalars(query.order_by(col(Trigger.id))))


def retries_of(session: Session, run_id: str) -> list[Run]:
    """The runs started by retrying ``run_id``, oldest first."""
    query = select(Run).where(col(Run.retry_of) == run_id).order_by(col(Run.id))
    return list(session.scalars(query))


def failure_reasons(session: Session, run_id: str, limit: int = 20) -> list[tuple[str, int]]:
    """The run's failed items grouped by error message, most frequent first."""
    count = func.count().label("n")
    query = (
        select(col(RunItem.error), count)
        .where(col(RunItem.run_id) == run_id, col(RunItem.status) == "failed")
        .group_by(col(RunItem.error))
        .order_by(count.desc(), col(RunItem.error))
        .limit(limit)
    )
    return [(error or "(no message)", int(n)) for error, n in session.execute(query)]


def run_items(
    session: Session,
    run_id: str,
    *,
    status: str | None = None,
    error: str | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """A page of a run's items in selection order, by status and/or exact error message."""
    query = select(RunItem).where(col(RunItem.run_id) == run_id)
    if status:
        query = query.where(col(RunItem.status) == status)
    if error == "(no message)":
        query = query.where(col(RunItem.error).is_(None))
    elif error:
        query = query.where(col(RunItem.error) == error)
    if after is not None:
        query = query.where(col(RunItem.seq) > after)
    rows = list(session.scalars(query.order_by(col(RunItem.seq)).limit(limit + 1)))
    return _page(rows, limit, "seq")


def entity_types(session: Session, workspace_id: str) -> list[EntityType]:
    """The workspace's entity types by name."""
    query = select(EntityType).where(col(EntityType.workspace_id) == workspace_id)
    return list(session.scalars(query.order_by(col(EntityType.name))))


def entities(
    session: Session,
    workspace_id: str,
    *,
    entity_type_id: str | None = None,
    status: str | None = None,
    updated_since: int | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """A page of the workspace's entities, filtered like the API's list."""
    query = select(Entity).where(col(Entity.workspace_id) == workspace_id)
    if entity_type_id:
        query = query.where(col(Entity.entity_type_id) == entity_type_id)
    if status:
        query = query.where(col(Entity.status) == status)
    if updated_since is not None:
        query = query.where(col(Entity.updated_at) >= updated_since)
    if after:
        query = query.where(col(Entity.id) > after)
    rows = list(session.scalars(query.order_by(col(Entity.id)).limit(limit + 1)))
    return _page(rows, limit, "id")


def entity_runs(session: Session, entity_id: str, limit: int = 50) -> list[tuple[RunItem, Run]]:
    """The runs that touched an entity, newest first, with its item in each."""
    query = (
        select(RunItem, Run)
        .join(Run, col(Run.id) == col(RunItem.run_id))
        .where(col(RunItem.entity_id) == entity_id)
        .order_by(col(RunItem.run_id).desc())
        .limit(limit)
    )
    return [(item, run) for item, run in session.execute(query)]


def workflow_names(session: Session, workspace_id: str) -> dict[str, str]:
    """Workflow id → name, for labelling runs and triggers."""
    query = select(col(Workflow.id), col(Workflow.name)).where(
        col(Workflow.workspace_id) == workspace_id
    )
    return {wid: name for wid, name in session.execute(query)}


def triggers(session: Session, workspace_id: str) -> list[Trigger]:
    """The workspace's triggers."""
    query = select(Trigger).where(col(Trigger.workspace_id) == workspace_id)
    return list(session.scalars(query.order_by(col(Trigger.id))))


def trigger_events(session: Session, trigger_id: str, limit: int = 50) -> list[TriggerEvent]:
    """A trigger's newest events."""
    query = (
        select(TriggerEvent)
        .where(col(TriggerEvent.trigger_id) == trigger_id)
        .order_by(col(TriggerEvent.id).desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def api_key(session: Session, key_id: str) -> ApiKey | None:
    """An API key row by id."""
    return session.get(ApiKey, key_id)


def approvals(
    session: Session,
    workspace_id: str,
    *,
    run_id: str | None = None,
    workflow_id: str | None = None,
    status: str | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """A page of the workspace's approvals, oldest first (the longest waiting on top)."""
    query = select(Approval).where(col(Approval.workspace_id) == workspace_id)
    if run_id:
        query = query.where(col(Approval.run_id) == run_id)
    if workflow_id:
        query = query.where(col(Approval.workflow_id) == workflow_id)
    if status:
        query = query.where(col(Approval.status) == status)
    if after:
        query = query.where(col(Approval.id) > after)
    rows = list(session.scalars(query.order_by(col(Approval.id)).limit(limit + 1)))
    return _page(rows, limit, "id")


def revisions(session: Session, workflow_id: str, limit: int = 100) -> list[WorkflowRevision]:
    """A workflow's newest revisions."""
    query = (
        select(WorkflowRevision)
        .where(col(WorkflowRevision.workflow_id) == workflow_id)
        .order_by(col(WorkflowRevision.version).desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def revision_patch(
    source: WorkflowRevision | None, target: WorkflowRevision
) -> list[dict[str, Any]]:
    """The RFC 6902 patch from one revision (None: an empty document) to another, computed
    over the same content the API's ``…/diff`` compares."""
    import jsonpatch

    from app.schemas.workflows import RevisionContentSchema

    dump = RevisionContentSchema().dump
    before = dump(source.snapshot) if source is not None else {}
    return list(jsonpatch.make_patch(before, dump(target.snapshot)))
