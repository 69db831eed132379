"""audit log, key-value store, approvals; dry runs and item changes

Revision ID: 0003
Revises: 0002

Adds ``audit_entries``, ``kv_entries`` and ``approvals``, ``runs.dry_run`` (false for every
existing run) and ``run_items.changes`` (null for existing items: only dry runs fill it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def _str(length: int | None = None) -> sqlmodel.sql.sqltypes.AutoString:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workspace_id", _str(40), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("actor_key_id", _str(40), nullable=True),
        sa.Column("actor_key_prefix", _str(20), nullable=True),
        sa.Column("actor_role", _str(20), nullable=True),
        sa.Column("action", _str(80), nullable=False),
        sa.Column("resource_type", _str(40), nullable=False),
        sa.Column("resource_id", _str(255), nullable=True),
        sa.Column("details", JSON, nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_entries_ws_id", "audit_entries", ["workspace_id", "id"])
    op.create_index(
        "ix_audit_entries_ws_resource", "audit_entries", ["workspace_id", "resource_id", "id"]
    )

    op.create_table(
        "kv_entries",
        sa.Column("workspace_id", _str(40), nullable=False),
        sa.Column("namespace", _str(100), nullable=False),
        sa.Column("key", _str(200), nullable=False),
        sa.Column("value", JSON, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.PrimaryKeyConstraint("workspace_id", "namespace", "key"),
    )

    op.create_table(
        "approvals",
        sa.Column("id", _str(40), nullable=False),
        sa.Column("workspace_id", _str(40), nullable=False),
        sa.Column("run_id", _str(40), nullable=False),
        sa.Column("workflow_id", _str(40), nullable=False),
        sa.Column("step_id", _str(80), nullable=False),
        sa.Column("entity_id", _str(40), nullable=False),
        sa.Column("item_seq", sa.Integer(), nullable=False),
        sa.Column("status", _str(20), nullable=False),
        sa.Column("preview", JSON, nullable=True),
        sa.Column("instructions", _str(), nullable=True),
        sa.Column("assignees", JSON, nullable=True),
        sa.Column("on_timeout", _str(10), nullable=False),
        sa.Column("on_reject", _str(10), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("decided_at", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", _str(40), nullable=True),
        sa.Column("comment", _str(), nullable=True),
        sa.ForeignKeyConstraint(["workspace_id"], ["workspaces.id"]),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "item_seq", "step_id"),
    )
    op.create_index("ix_approvals_ws_id", "approvals", ["workspace_id", "id"])
    op.create_index("ix_approvals_run_step_status", "approvals", ["run_id", "step_id", "status"])
    op.create_index("ix_approvals_due", "approvals", ["status", "expires_at"])

    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(
            sa.Column("dry_run", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("run_items") as batch_op:
        batch_op.add_column(sa.Column("changes", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_items") as batch_op:
        batch_op.drop_column("changes")
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("dry_run")
    op.drop_table("approvals")
    op.drop_table("kv_entries")
    op.drop_table("audit_entries")
