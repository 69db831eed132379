"""Conveyor's vocabulary: the statuses of runs, items, workflows, approvals and trigger
events, and the roles of API keys, as ``str`` enums (each member equals its string, so
rows, JSON and SQL comparisons keep working unchanged)."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is: ``pending`` until dispatched, ``running``, then one terminal status."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ItemStatus(StrEnum):
    """Where one entity of a run is; ``awaiting_approval`` waits at a review gate."""

    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A run or an item in one of these has ended; nothing changes it any more.
TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class WorkflowStatus(StrEnum):
    """A workflow's lifecycle: only an ``active`` one is fired by triggers."""

    DRAFT = "draft"
    ACTIVE = "active"
    ARCHIVED = "archived"


class ApprovalStatus(StrEnum):
    """A review gate's decision for one entity."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


class Role(StrEnum):
    """An API key's role; each role may do what the roles before it may."""

    VIEWER = "viewer"
    EXECUTOR = "executor"
    EDITOR = "editor"
    ADMIN = "admin"

    def includes(self, other: str) -> bool:
        """True when this role is ``other`` or above."""
        order = list(Role)
        return order.index(self) >= order.index(Role(other))


class TriggerType(StrEnum):
    """What fires a trigger: its cron schedule, or a call to its webhook."""

    CRON = "cron"
    WEBHOOK = "webhook"


class OverlapPolicy(StrEnum):
    """What a trigger does when it fires while its previous run is still going."""

    SKIP = "skip"
    QUEUE = "queue"
    ALLOW = "allow"


class CatchUp(StrEnum):
    """What a cron trigger does with the times it missed (scheduler down)."""

    NONE = "none"
    LAST = "last"


class Outcome(StrEnum):
    """What a trigger event did."""

    FIRED = "fired"  # a run was started
    QUEUED = "queued"  # waiting for the trigger's previous run to end (overlapPolicy: queue)
    SKIPPED = "skipped"  # no run; ``reason`` says why


class SkipReason(StrEnum):
    """Why a trigger event started no run."""

    OVERLAP = "overlap"
    MISSED = "missed"
    EMPTY_SELECTION = "empty_selection"
    WORKFLOW_NOT_ACTIVE = "workflow_not_active"
    TRIGGER_DISABLED = "trigger_disabled"


# A trigger selector's ``updatedSince`` that means "since the trigger's last run".
UPDATED_SINCE_LAST_RUN = "lastRun"

# The members' values, for validators and the OpenAPI enums (plain strings).
ROLES = tuple(role.value for role in Role)
APPROVAL_STATUSES = tuple(status.value for status in ApprovalStatus)
TRIGGER_TYPES = tuple(kind.value for kind in TriggerType)
OVERLAP_POLICIES = tuple(policy.value for policy in OverlapPolicy)
CATCH_UP_POLICIES = tuple(policy.value for policy in CatchUp)
