"""workflow revisions: every saved version of a workflow

Revision ID: 0002
Revises: 0001

Backfill: each existing workflow gets one revision from its current row. A run that pinned
an older version keeps that version's ``steps`` and ``settings`` on its own row, so those
versions get a revision too (with the workflow's current name, description, status and
entity type, the only ones known): a run's ``workflowVersion`` always resolves.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
ALL_FIELDS = ["name", "description", "status", "entityTypeId", "steps", "settings"]

workflows = sa.table(
    "workflows",
    sa.column("id", sa.String),
    sa.column("name", sa.String),
    sa.column("description", sa.String),
    sa.column("status", sa.String),
    sa.column("entity_type_id", sa.String),
    sa.column("steps", JSON),
    sa.column("settings", JSON),
    sa.column("version", sa.Integer),
    sa.column("created_at", sa.BigInteger),
    sa.column("updated_at", sa.BigInteger),
)
runs = sa.table(
    "runs",
    sa.column("workflow_id", sa.String),
    sa.column("workflow_version", sa.Integer),
    sa.column("steps", JSON),
    sa.column("settings", JSON),
    sa.column("created_at", sa.BigInteger),
)
revisions = sa.table(
    "workflow_revisions",
    sa.column("workflow_id", sa.String),
    sa.column("version", sa.Integer),
    sa.column("snapshot", JSON),
    sa.column("changes", JSON),
    sa.column("created_at", sa.BigInteger),
)


def upgrade() -> None:
    op.create_table(
        "workflow_revisions",
        sa.Column("workflow_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot", JSON, nullable=False),
        sa.Column("changes", JSON, nullable=False),
        sa.Column("restored_from", sa.Integer(), nullable=True),
        sa.Column("actor_key_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("actor_key_prefix", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("workflow_id", "version"),
    )
    _backfill()


def _backfill() -> None:
    """One revision per workflow from its row, plus one per older version a run pinned."""
    bind = op.get_bind()
    current: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for wf in bind.execute(sa.select(workflows)).mappings():
        current[wf["id"]] = wf
        rows.append(
            {
                "workflow_id": wf["id"],
                "version": wf["version"],
                "snapshot": _snapshot(wf, wf["steps"], wf["settings"]),
                "changes": ALL_FIELDS,
                "created_at": wf["updated_at"],
            }
        )
    seen = {(r["workflow_id"], r["version"]) for r in rows}
    pinned = bind.execute(
        sa.select(runs).order_by(runs.c.workflow_id, runs.c.workflow_version, runs.c.created_at)
    ).mappings()
    for run in pinned:
        key = (run["workflow_id"], run["workflow_version"])
        wf = current.get(run["workflow_id"])
        if wf is None or key in seen:
            continue
        seen.add(key)
        rows.append(
            {
                "workflow_id": key[0],
                "version": key[1],
                "snapshot": _snapshot(wf, run["steps"], run["settings"]),
                "changes": ["steps", "settings"],
                "created_at": run["created_at"],
            }
        )
    if rows:
        op.bulk_insert(revisions, rows)


def _snapshot(wf: Any, steps: Any, settings: Any) -> dict[str, Any]:
    """A revision snapshot, in the form ``app.services.revisions`` writes."""
    return {
        "name": wf["name"],
        "description": wf["description"],
        "status": wf["status"],
        "entity_type_id": wf["entity_type_id"],
        "steps": steps,
        "settings": settings,
    }


def downgrade() -> None:
    op.drop_table("workflow_revisions")
