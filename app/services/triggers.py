"""Triggers: cron schedules in IANA time zones, selectors evaluated at fire time, webhook fires.

The time arithmetic (which instants a cron expression names in a zone, across DST) is
``app.cron``; this module stores triggers, records their events and starts their runs.
"""

from __future__ import annotations

import zoneinfo
from typing import Any

from sqlalchemy import delete, select, update
from sqlmodel import Session, col

from app.cron import (
    from_ms,
    next_fire_time,
    to_ms,
)
from app.errors import Conflict, NotFound, ValidationFailed
from app.ids import new_id, now_ms
from app.models import Run, Trigger, TriggerEvent, Workflow
from app.queue import TaskQueue
from app.services.ownership import get_owned
from app.services.runs import select_entity_ids, start_run
from app.statuses import (
    TERMINAL,
    UPDATED_SINCE_LAST_RUN,
    Outcome,
    SkipReason,
    WorkflowStatus,
)

# --- cron arithmetic -------------------------------------------------------------------


def next_run_at(trigger: Trigger, after_ms: int) -> int | None:
    """When an enabled cron trigger fires next after ``after_ms``; ``None`` otherwise."""
    if trigger.type != "cron" or not trigger.enabled or not trigger.cron:
        return None
    zone = zoneinfo.ZoneInfo(trigger.timezone)
    return to_ms(next_fire_time(trigger.cron, zone, from_ms(after_ms)))


# --- CRUD ------------------------------------------------------------------------------


def get_trigger(*, session: Session, workspace_id: str, trigger_id: str) -> Trigger:
    """The trigger, or 404 (also for another workspace's)."""
    return get_owned(session, Trigger, trigger_id, workspace_id, what="Trigger")


def _workflow_for(session: Session, workspace_id: str, workflow_id: str) -> Workflow:
    """The trigger's workflow, or 422 naming ``workflowId``."""
    workflow = session.get(Workflow, workflow_id)
    if workflow is None or workflow.workspace_id != workspace_id:
        raise ValidationFailed("Unknown workflow.", {"workflowId": ["Unknown workflow."]})
    return workflow


def _check(trigger: Trigger, workflow: Workflow, now: int) -> None:
    """Cross-field rules the schema cannot see; sets ``next_run_at``. 422 on failure."""
    errors: dict[str, list[str]] = {}
    if trigger.type == "cron" and not trigger.cron:
        errors["cron"] = ["A cron trigger needs a cron expression."]
    if trigger.type == "webhook" and trigger.cron:
        errors["cron"] = ["Only cron triggers have a schedule; a webhook trigger has no cron."]
    selected_type = (trigger.selector or {}).get("entity_type_id")
    if selected_type is not None and selected_type != workflow.entity_type_id:
        errors["selector.entityTypeId"] = [
            f"The workflow runs over entity type {workflow.entity_type_id!r}, "
            f"not {selected_type!r}."
        ]
    if not errors:
        try:
            trigger.next_run_at = next_run_at(trigger, now)
        except ValueError as exc:
            errors["cron"] = [str(exc)]
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(f"The trigger is not valid: {first}: {errors[first][0]}", errors)


def create_trigger(
    *, session: Session, workspace_id: str, data: dict[str, Any], now: int | None = None
) -> Trigger:
    """A new trigger; an enabled cron trigger is scheduled from ``now`` at once."""
    workflow = _workflow_for(session, workspace_id, data["workflow_id"])
    stamp = now_ms()
    row = Trigger(
        id=new_id("trg"),
        workspace_id=workspace_id,
        workflow_id=workflow.id,
        type=data["type"],
        enabled=data["enabled"],
        cron=data.get("cron"),
        timezone=data["timezone"],
        selector=data.get("selector"),
        overlap_policy=data["overlap_policy"],
        catch_up=data["catch_up"],
        created_at=stamp,
        updated_at=stamp,
    )
    _check(row, workflow, now if now is not None else stamp)
    session.add(row)
    session.commit()
    return row


def update_trigger(
    *,
    session: Session,
    workspace_id: str,
    trigger_id: str,
    data: dict[str, Any],
    now: int | None = None,
) -> Trigger:
    """Change a trigger; a new cron, timezone or enabled flag reschedules it from ``now``."""
    row = _locked(session, workspace_id, trigger_id)
    workflow = _workflow_for(session, workspace_id, row.workflow_id)
    previous_next = row.next_run_at
    for field in ("enabled", "cron", "timezone", "selector", "overlap_policy", "catch_up"):
        if field in data:
            setattr(row, field, data[field])
    stamp = now_ms()
    _check(row, workflow, now if now is not None else stamp)
    if not ({"enabled", "cron", "timezone"} & data.keys()):
        row.next_run_at = previous_next  # only a schedule change moves the next fire
    if data:
        row.updated_at = stamp
    session.add(row)
    session.commit()
    return row


def delete_trigger(*, session: Session, workspace_id: str, trigger_id: str) -> None:
    """Delete a trigger and its events (runs it started are kept)."""
    row = _locked(session, workspace_id, trigger_id)
    session.execute(delete(TriggerEvent).where(col(TriggerEvent.trigger_id) == row.id))
    session.delete(row)
    session.commit()


def _locked(session: Session, workspace_id: str, trigger_id: str) -> Trigger:
    """The trigger, locked for update so a scheduler firing it finishes first (404 if absent)."""
    row = session.scalars(
        select(Trigger)
        .where(col(Trigger.id) == trigger_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if row is None or row.workspace_id != workspace_id:
        raise NotFound("Trigger not found.")
    return row


# --- firing ----------------------------------------------------------------------------


def record_event(
    session: Session,
    *,
    trigger_id: str,
    outcome: Outcome,
    scheduled_at: int | None = None,
    reason: SkipReason | None = None,
    message: str | None = None,
    run_id: str | None = None,
    created_at: int | None = None,
) -> TriggerEvent:
    """Insert and flush one event; a second ``(trigger, scheduled_at)`` raises IntegrityError."""
    event = TriggerEvent(
        id=new_id("tev"),
        trigger_id=trigger_id,
        scheduled_at=scheduled_at,
        outcome=outcome.value,
        reason=reason.value if reason else None,
        message=message,
        run_id=run_id,
        created_at=created_at if created_at is not None else now_ms(),
    )
    session.add(event)
    session.flush()
    return event


def active_run(session: Session, trigger: Trigger) -> Run | None:
    """A run this trigger started that has not ended, if any."""
    return session.scalars(
        select(Run)
        .where(
            col(Run.trigger_id) == trigger.id,
            col(Run.trigger_type) == trigger.type,
            col(Run.status).not_in(TERMINAL),
        )
        .order_by(col(Run.created_at).desc())
        .limit(1)
    ).first()


def selected_entity_ids(session: Session, trigger: Trigger, workflow: Workflow) -> list[str]:
    """The entities the trigger's selector picks now (``updatedSince: lastRun`` included)."""
    selector = trigger.selector or {}
    criteria: dict[str, Any] = {}
    if selector.get("status") is not None:
        criteria["status"] = selector["status"]
    if selector.get("updated_since") == UPDATED_SINCE_LAST_RUN and trigger.last_run_at is not None:
        criteria["updated_since"] = trigger.last_run_at
    return select_entity_ids(
        session,
        workspace_id=workflow.workspace_id,
        entity_type_id=workflow.entity_type_id,
        selector=criteria,
    )


def inactive_reason(trigger: Trigger, workflow: Workflow | None) -> tuple[SkipReason, str] | None:
    """Why this trigger cannot start a run now (disabled, workflow not active), if it cannot."""
    if not trigger.enabled:
        return SkipReason.TRIGGER_DISABLED, "The trigger is disabled."
    if workflow is None or workflow.status != WorkflowStatus.ACTIVE:
        status = workflow.status if workflow else "deleted"
        return (
            SkipReason.WORKFLOW_NOT_ACTIVE,
            f"The workflow is {status}; triggers start only active workflows.",
        )
    return None


def start_trigger_run(
    session: Session,
    *,
    queue: TaskQueue,
    trigger: Trigger,
    workflow: Workflow,
    entity_ids: list[str],
    input: Any = None,
    now: int,
) -> Run:
    """Create (flush, not commit) a run started by ``trigger``; the caller commits, dispatches."""
    run = start_run(
        session=session,
        queue=queue,
        workflow=workflow,
        entity_ids=entity_ids,
        input=input,
        trigger_type=trigger.type,
        trigger_id=trigger.id,
        commit=False,
    )
    session.execute(update(Trigger).where(col(Trigger.id) == trigger.id).values(last_run_at=now))
    trigger.last_run_at = now
    return run


def webhook_trigger(*, session: Session, workspace_id: str, trigger_id: str) -> Trigger:
    """The webhook trigger a delivery names: 404 when unknown or when it is a cron trigger."""
    row = get_trigger(session=session, workspace_id=workspace_id, trigger_id=trigger_id)
    if row.type != "webhook":
        raise NotFound(f"Trigger {row.id} is a cron trigger; it has no webhook.")
    return row


class TriggerInactive(Conflict):
    """The trigger cannot start a run now: it is disabled or its workflow is not active."""

    def __init__(self, reason: SkipReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def record_refused_delivery(*, session: Session, trigger_id: str, refusal: TriggerInactive) -> None:
    """Record (and commit) a webhook delivery refused with 409, so the events show it."""
    record_event(
        session,
        trigger_id=trigger_id,
        outcome=Outcome.SKIPPED,
        reason=refusal.reason,
        message=refusal.message,
    )
    session.commit()


def fire_webhook(
    *, session: Session, queue: TaskQueue, trigger: Trigger, payload: Any
) -> tuple[dict[str, Any], Run | None]:
    """Start a run for one webhook delivery (flush only): ``(response body, run or None)``.

    Raises :class:`TriggerInactive` (409) for a disabled trigger or a non-active workflow.
    ``entityIds`` in an object payload select the entities (422 for unknown ones);
    without them the trigger's selector does. An empty selection records a skipped
    event and starts no run.
    """
    workflow = session.get(Workflow, trigger.workflow_id)
    refusal = inactive_reason(trigger, workflow)
    if refusal is not None:
        raise TriggerInactive(*refusal)
    assert workflow is not None
    now = now_ms()
    event = record_event(session, trigger_id=trigger.id, outcome=Outcome.FIRED, created_at=now)
    entity_ids: list[str] | None = None
    if isinstance(payload, dict) and "entityIds" in payload:
        raw = payload["entityIds"]
        if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
            raise ValidationFailed(
                "entityIds must be a list of entity ids.",
                {"entityIds": ["Must be a list of strings."]},
            )
        entity_ids = list(dict.fromkeys(raw))
    if entity_ids is None:
        entity_ids = selected_entity_ids(session, trigger, workflow)
    run: Run | None = None
    if not entity_ids:
        event.outcome = Outcome.SKIPPED.value
        event.reason = SkipReason.EMPTY_SELECTION.value
        event.message = "No entity matched; no run was started."
    else:
        run = start_trigger_run(
            session,
            queue=queue,
            trigger=trigger,
            workflow=workflow,
            entity_ids=entity_ids,
            input=payload,
            now=now,
        )
        event.run_id = run.id
    session.add(event)
    session.flush()
    body = {
        "job_id": run.job_id if run else None,
        "run_id": run.id if run else None,
        "event_id": event.id,
        "outcome": event.outcome,
        "reason": event.reason,
    }
    return body, run
