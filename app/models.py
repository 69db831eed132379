"""SQLModel tables: Conveyor's storage. Timestamps are epoch milliseconds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.ids import now_ms
from app.statuses import ApprovalStatus, ItemStatus, RunStatus, WorkflowStatus

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only autoincrements INTEGER PRIMARY KEY.
SerialPK = BigInteger().with_variant(Integer(), "sqlite")


def _json(nullable: bool = True) -> Any:
    """A JSON column (JSONB on PostgreSQL)."""
    return Field(default=None, sa_column=Column(JSONType, nullable=nullable))


def _ms(nullable: bool = True, default: Any = None) -> Any:
    """A BIGINT millisecond timestamp column."""
    if default is not None:
        return Field(default_factory=default, sa_type=BigInteger, nullable=nullable)
    return Field(default=None, sa_type=BigInteger, nullable=nullable)


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core ``Table``: its ``__table__``, which SQLModel leaves untyped."""
    table = inspect(model).local_table
    assert isinstance(table, Table), f"{model.__name__} is not a table model"
    return table


class Workspace(SQLModel, table=True):
    __tablename__ = "workspaces"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    created_at: int = _ms(False, now_ms)


class ApiKey(SQLModel, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", index=True, max_length=40)
    name: str = Field(max_length=200)
    role: str = Field(max_length=20)
    key_prefix: str = Field(max_length=20)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: int = _ms(False, now_ms)
    last_used_at: int | None = _ms()


class EntityType(SQLModel, table=True):
    __tablename__ = "entity_types"
    __table_args__ = (Index("ix_entity_types_ws_id", "workspace_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None)
    schema_: dict[str, Any] | None = Field(default=None, sa_column=Column("schema", JSONType))
    created_at: int = _ms(False, now_ms)
    updated_at: int = _ms(False, now_ms)


class Entity(SQLModel, table=True):
    __tablename__ = "entities"
    __table_args__ = (
        Index("ix_entities_ws_id", "workspace_id", "id"),
        Index("ix_entities_ws_type_id", "workspace_id", "entity_type_id", "id"),
        Index("ix_entities_ws_status_id", "workspace_id", "status", "id"),
        Index("ix_entities_ws_updated", "workspace_id", "updated_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    entity_type_id: str = Field(foreign_key="entity_types.id", max_length=40)
    data: dict[str, Any] = _json(False)
    status: str = Field(default="draft", max_length=64)
    version: int = Field(default=1)
    published_at: int | None = _ms()
    published_version: int | None = Field(default=None)
    created_at: int = _ms(False, now_ms)
    updated_at: int = _ms(False, now_ms)


class Workflow(SQLModel, table=True):
    __tablename__ = "workflows"
    __table_args__ = (Index("ix_workflows_ws_id", "workspace_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    entity_type_id: str = Field(foreign_key="entity_types.id", max_length=40)
    name: str = Field(max_length=200)
    description: str | None = Field(default=None)
    status: str = Field(default=WorkflowStatus.DRAFT, max_length=20)
    steps: list[dict[str, Any]] = _json(False)
    settings: dict[str, Any] = _json(False)
    version: int = Field(default=1)
    last_run_at: int | None = _ms()
    created_at: int = _ms(False, now_ms)
    updated_at: int = _ms(False, now_ms)


class Job(SQLModel, table=True):
    """A background operation done for a client; a workflow run is one."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_ws_id", "workspace_id", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    type: str = Field(max_length=40)
    run_id: str | None = Field(default=None, max_length=40)
    workflow_id: str | None = Field(default=None, max_length=40)
    created_at: int = _ms(False, now_ms)


class Run(SQLModel, table=True):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_wf_id", "workflow_id", "id"),
        Index("ix_runs_status", "status"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    workflow_id: str = Field(foreign_key="workflows.id", max_length=40)
    workflow_version: int
    job_id: str = Field(max_length=40)
    status: str = Field(default=RunStatus.PENDING, max_length=20)
    total: int = Field(default=0)
    completed: int = Field(default=0)
    failed: int = Field(default=0)
    cancelled: int = Field(default=0)
    trigger_type: str = Field(default="manual", max_length=20)
    trigger_id: str | None = Field(default=None, max_length=40)
    retry_of: str | None = Field(default=None, max_length=40)
    dry_run: bool = Field(default=False)
    input: Any = _json()
    steps: list[dict[str, Any]] = _json(False)
    settings: dict[str, Any] = _json(False)
    error: str | None = Field(default=None)
    input_tokens: int = Field(default=0, sa_type=BigInteger)
    output_tokens: int = Field(default=0, sa_type=BigInteger)
    cancel_requested: bool = Field(default=False)
    heartbeat_at: int | None = _ms()
    created_at: int = _ms(False, now_ms)
    started_at: int | None = _ms()
    completed_at: int | None = _ms()


class RunSelection(SQLModel, table=True):
    """The entity ids chosen for a run, kept apart so run rows stay small."""

    __tablename__ = "run_selections"

    run_id: str = Field(primary_key=True, foreign_key="runs.id", max_length=40)
    entity_ids: list[str] = _json(False)


class RunItem(SQLModel, table=True):
    """One entity's progress through one run."""

    __tablename__ = "run_items"
    __table_args__ = (
        Index("ix_run_items_claim", "run_id", "status", "seq"),
        Index("ix_run_items_entity", "entity_id", "run_id"),
    )

    run_id: str = Field(primary_key=True, foreign_key="runs.id", max_length=40)
    seq: int = Field(primary_key=True)
    entity_id: str = Field(max_length=40)
    status: str = Field(default=ItemStatus.PENDING, max_length=20)
    attempts: int = Field(default=0)
    error: str | None = Field(default=None)
    next_step: int = Field(default=0)
    step_results: list[dict[str, Any]] | None = _json()
    state: dict[str, Any] | None = _json()
    # A dry run's would-be effects: the entity's RFC 6902 patch and the requests not sent.
    changes: dict[str, Any] | None = _json()
    claim_token: str | None = Field(default=None, max_length=40)
    lease_expires_at: int | None = _ms()
    started_at: int | None = _ms()
    completed_at: int | None = _ms()


class JobLog(SQLModel, table=True):
    __tablename__ = "job_logs"
    __table_args__ = (Index("ix_job_logs_job_id", "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=SerialPK)
    job_id: str = Field(max_length=40)
    timestamp: int = _ms(False, now_ms)
    level: str = Field(default="info", max_length=10)
    entity_id: str | None = Field(default=None, max_length=40)
    step_id: str | None = Field(default=None, max_length=80)
    message: str
    data: Any = _json()


class IdempotencyRecord(SQLModel, table=True):
    """A remembered response for a retried write with an ``Idempotency-Key``."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("workspace_id", "scope", "key"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=SerialPK)
    workspace_id: str = Field(max_length=40)
    scope: str = Field(max_length=120)
    key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    status_code: int | None = Field(default=None)
    response: Any = _json()
    created_at: int = _ms(False, now_ms)


class Credential(SQLModel, table=True):
    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", index=True, max_length=40)
    name: str = Field(max_length=200)
    type: str = Field(max_length=40)
    secret: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    settings: dict[str, Any] | None = _json()
    created_at: int = _ms(False, now_ms)
    updated_at: int = _ms(False, now_ms)


class Trigger(SQLModel, table=True):
    """Starts runs of a workflow on a cron schedule or from a webhook delivery."""

    __tablename__ = "triggers"
    __table_args__ = (
        Index("ix_triggers_ws_id", "workspace_id", "id"),
        Index("ix_triggers_workflow", "workflow_id"),
        Index("ix_triggers_due", "type", "enabled", "next_run_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    workflow_id: str = Field(foreign_key="workflows.id", max_length=40)
    type: str = Field(max_length=20)
    enabled: bool = Field(default=True)
    cron: str | None = Field(default=None, sa_column=Column(String(120)))
    timezone: str = Field(default="UTC", max_length=64)
    selector: dict[str, Any] | None = _json()
    overlap_policy: str = Field(default="skip", max_length=10)
    catch_up: str = Field(default="none", max_length=10)
    next_run_at: int | None = _ms()
    last_run_at: int | None = _ms()
    created_at: int = _ms(False, now_ms)
    updated_at: int = _ms(False, now_ms)


class TriggerEvent(SQLModel, table=True):
    """One fire, queue or skip of a trigger. ``(trigger_id, scheduled_at)`` is unique.

    The unique constraint is what makes a cron time start at most one run however many
    schedulers race for it; webhook deliveries have no ``scheduled_at`` (NULLs are distinct).
    """

    __tablename__ = "trigger_events"
    __table_args__ = (
        UniqueConstraint("trigger_id", "scheduled_at"),
        Index("ix_trigger_events_trigger", "trigger_id", "id"),
        Index("ix_trigger_events_outcome", "outcome", "trigger_id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    trigger_id: str = Field(foreign_key="triggers.id", ondelete="CASCADE", max_length=40)
    scheduled_at: int | None = _ms()
    created_at: int = _ms(False, now_ms)
    outcome: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=40)
    message: str | None = Field(default=None)
    run_id: str | None = Field(default=None, max_length=40)


class WorkflowRevision(SQLModel, table=True):
    """One saved version of a workflow, written in the same transaction as the save.

    ``snapshot`` holds the workflow's content as stored on its row (``name``, ``description``,
    ``status``, ``entity_type_id``, ``steps``, ``settings``); ``changes`` names the top-level
    fields (camelCase, as the API shows them) that differ from the version before.
    """

    __tablename__ = "workflow_revisions"

    workflow_id: str = Field(
        primary_key=True, foreign_key="workflows.id", ondelete="CASCADE", max_length=40
    )
    version: int = Field(primary_key=True)
    snapshot: dict[str, Any] = _json(False)
    changes: list[str] = _json(False)
    restored_from: int | None = Field(default=None)
    actor_key_id: str | None = Field(default=None, max_length=40)
    actor_key_prefix: str | None = Field(default=None, max_length=20)
    created_at: int = _ms(False, now_ms)


class AuditEntry(SQLModel, table=True):
    """One write made through the API, recorded in the same transaction as the write.

    The actor is copied (not referenced), so an entry outlives the key that made it.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_entries_ws_id", "workspace_id", "id"),
        Index("ix_audit_entries_ws_resource", "workspace_id", "resource_id", "id"),
    )

    # A serial, not a ULID: newest first must hold within one millisecond too.
    id: int | None = Field(default=None, primary_key=True, sa_type=SerialPK)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    at: int = _ms(False, now_ms)
    actor_key_id: str | None = Field(default=None, max_length=40)
    actor_key_prefix: str | None = Field(default=None, max_length=20)
    actor_role: str | None = Field(default=None, max_length=20)
    action: str = Field(max_length=80)
    resource_type: str = Field(max_length=40)
    resource_id: str | None = Field(default=None, max_length=255)
    details: dict[str, Any] | None = _json()


class KvEntry(SQLModel, table=True):
    """A namespaced JSON value that lasts across runs; ``version`` counts its writes."""

    __tablename__ = "kv_entries"

    workspace_id: str = Field(primary_key=True, foreign_key="workspaces.id", max_length=40)
    namespace: str = Field(primary_key=True, max_length=100)
    key: str = Field(primary_key=True, max_length=200)
    value: Any = _json(False)
    version: int = Field(default=1)
    updated_at: int = _ms(False, now_ms)


class Approval(SQLModel, table=True):
    """One entity waiting at (or decided at) a review gate of one run.

    ``(run_id, item_seq, step_id)`` is unique, so an engine that re-opens a gate after a
    crash finds the approval it already opened instead of adding a second one.
    """

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("run_id", "item_seq", "step_id"),
        Index("ix_approvals_ws_id", "workspace_id", "id"),
        Index("ix_approvals_run_step_status", "run_id", "step_id", "status"),
        Index("ix_approvals_due", "status", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    workspace_id: str = Field(foreign_key="workspaces.id", max_length=40)
    run_id: str = Field(foreign_key="runs.id", ondelete="CASCADE", max_length=40)
    workflow_id: str = Field(max_length=40)
    step_id: str = Field(max_length=80)
    entity_id: str = Field(max_length=40)
    item_seq: int
    status: str = Field(default=ApprovalStatus.PENDING, max_length=20)
    preview: Any = _json()
    instructions: str | None = Field(default=None)
    assignees: list[str] | None = _json()
    on_timeout: str = Field(default="reject", max_length=10)
    on_reject: str = Field(default="fail", max_length=10)
    expires_at: int | None = _ms()
    created_at: int = _ms(False, now_ms)
    decided_at: int | None = _ms()
    decided_by: str | None = Field(default=None, max_length=40)
    comment: str | None = Field(default=None)
