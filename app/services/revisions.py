"""Workflow revisions: every saved version of a workflow, kept whole.

Each create, update, restore or duplicate writes one ``workflow_revisions`` row in the same
transaction as the workflow row, so the revision at ``workflow.version`` always exists and a
run's pinned ``workflowVersion`` always resolves. A snapshot holds the workflow's content as
the row stores it (``settings`` in snake_case); the API dumps it through the same schema as a
workflow, so a revision, a diff between two revisions and the workflow itself all read alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col

from app.errors import NotFound
from app.models import Workflow, WorkflowRevision

# Snapshot keys (as stored) and the API's name for each, in the order ``changes`` lists them.
CONTENT_FIELDS = {
    "name": "name",
    "description": "description",
    "status": "status",
    "entity_type_id": "entityTypeId",
    "steps": "steps",
    "settings": "settings",
}


@dataclass(frozen=True)
class Actor:
    """The API key behind a change (``None`` fields for changes made outside the API)."""

    key_id: str | None = None
    key_prefix: str | None = None


def snapshot_of(row: Workflow) -> dict[str, Any]:
    """The workflow's content, as a revision keeps it."""
    return {field: getattr(row, field) for field in CONTENT_FIELDS}


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """The API names of the top-level fields that differ (all of them for a first version)."""
    return [
        api_name
        for field, api_name in CONTENT_FIELDS.items()
        if before is None or before.get(field) != after.get(field)
    ]


def record_revision(
    *,
    session: Session,
    row: Workflow,
    actor: Actor | None,
    previous: dict[str, Any] | None = None,
    restored_from: int | None = None,
) -> WorkflowRevision:
    """Add the revision for ``row.version`` to the session; the caller commits both together.

    ``previous`` is the snapshot before the change (``None`` for a new workflow).
    """
    snapshot = snapshot_of(row)
    actor = actor or Actor()
    revision = WorkflowRevision(
        workflow_id=row.id,
        version=row.version,
        snapshot=snapshot,
        changes=changed_fields(previous, snapshot),
        restored_from=restored_from,
        actor_key_id=actor.key_id,
        actor_key_prefix=actor.key_prefix,
        created_at=row.updated_at,
    )
    session.add(revision)
    return revision


def revisions_query(workflow_id: str) -> Any:
    """The workflow's revisions; the caller orders and pages them."""
    return select(WorkflowRevision).where(col(WorkflowRevision.workflow_id) == workflow_id)


def get_revision(*, session: Session, workflow_id: str, version: int) -> WorkflowRevision:
    """One revision of a workflow the caller may see, or 404."""
    revision = session.get(WorkflowRevision, (workflow_id, version))
    if revision is None:
        raise NotFound(f"The workflow has no version {version}.")
    return revision
