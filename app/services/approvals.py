"""Review gates: open approvals for parked entities, decide them exactly once, expire them.

An entity that reaches an ``approval`` step is *parked*: its run item is in status
``awaiting_approval`` (no claim, no lease, no worker) and one ``approvals`` row is
``pending``. Nothing polls it; a decision moves it:

- **approve** → the item goes back to ``pending`` with ``next_step`` after the gate and
  the gate's step record completed, and the run's lanes are queued after the commit, so
  a worker claims it within seconds like any pending item;
- **reject**, ``onReject: fail`` → the item ends ``failed`` and the run's ``failed``
  counter moves in the same transaction;
- **reject**, ``onReject: stop`` → the item goes back to ``pending`` with ``next_step``
  past the last step: the engine's ordinary "ran past the last step" path completes it
  and writes the entity's changes so far, with the same crash safety as any completion.

Exactly once: a decision is one guarded ``UPDATE approvals … WHERE status = 'pending'
RETURNING``; a second decider, concurrent or later, matches no row. Lock order is always
runs (by id) → approvals → run items, the same as cancel's, so a decision and a cancel
of one run serialise instead of deadlocking.

Counting: ``awaitingApproval`` is the number of items in that status (an index-only
count); the run's ``pending`` is what is neither final nor waiting, so
``total == completed + failed + cancelled + pending + awaitingApproval`` at every moment.

The engine's side, in the transaction of the checkpoint that reaches a gate: write the
item with ``status = 'awaiting_approval'``, ``next_step`` = the gate's index, its step
records (the gate's with the step's output), ``claim_token``/``lease_expires_at`` cleared
(and ``state`` if it checkpoints one), then call :func:`open_approvals`. The sweeper calls
:func:`expire_approvals`. A dry run should not park (nobody approves a rehearsal).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from app.errors import Conflict, ValidationFailed
from app.ids import new_id, now_ms
from app.models import Approval, Run, RunItem, table_of
from app.queue import PROCESS_LANE, TaskQueue
from app.services import audit
from app.services.finalize import finalize_and_notify
from app.services.ownership import get_owned
from app.statuses import ApprovalStatus, ItemStatus

PENDING, APPROVED, REJECTED, EXPIRED = (
    ApprovalStatus.PENDING,
    ApprovalStatus.APPROVED,
    ApprovalStatus.REJECTED,
    ApprovalStatus.EXPIRED,
)
AWAITING = ItemStatus.AWAITING_APPROVAL
HOUR_MS = 3_600_000
# Lanes re-queued per run after a decision: one per this many resumed entities (max 16).
ENTITIES_PER_LANE = 500
MAX_LANES = 16


@dataclass
class Outcome:
    """What one decision transaction did, for the work done after its commit."""

    decided: int = 0
    resumed: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # run → items
    finished: set[str] = field(default_factory=set)  # runs with newly final items


def _gate_config(run: Run, step_id: str) -> dict[str, Any]:
    """The approval step's loaded config in the run's pinned steps (defaults if absent)."""
    from steps import approval

    for step in run.steps or []:
        if step.get("id") == step_id:
            loaded: dict[str, Any] = approval.Config().load(step.get("config") or {})
            return loaded
    return approval.Config().load({})


def _gate_index(run: Run, step_id: str) -> int:
    for index, step in enumerate(run.steps or []):
        if step.get("id") == step_id:
            return index
    raise ValueError(f"run {run.id} has no step {step_id!r}")


def open_approvals(session: Session, *, run: Run, items: Sequence[dict[str, Any]]) -> int:
    """Insert a pending approval per parked item, in the caller's transaction (no commit).

    ``items``: ``{seq, entity_id, step_id, preview, instructions, timeout_hours}`` each
    (``instructions``/``timeout_hours`` may be None: the gate's config fills them in).
    An approval that already exists for ``(run, seq, step)`` is kept as it is (a gate
    re-opened after a crash). Returns how many were inserted. The caller sets the items
    to ``awaiting_approval`` (with the gate as ``next_step``, claim and lease cleared) in
    the same transaction.
    """
    if not items:
        return 0
    now = now_ms()
    configs: dict[str, dict[str, Any]] = {}
    rows = []
    for item in items:
        step_id = item["step_id"]
        config = configs.get(step_id)
        if config is None:
            config = configs[step_id] = _gate_config(run, step_id)
        hours = item.get("timeout_hours")
        if hours is None:
            hours = config.get("timeout_hours")
        instructions = item.get("instructions")
        if instructions is None:
            instructions = config.get("instructions")
        rows.append(
            {
                "id": new_id("apr"),
                "workspace_id": run.workspace_id,
                "run_id": run.id,
                "workflow_id": run.workflow_id,
                "step_id": step_id,
                "entity_id": item["entity_id"],
                "item_seq": int(item["seq"]),
                "status": PENDING,
                "preview": item.get("preview"),
                "instructions": instructions,
                "assignees": list(config.get("assignees") or []),
                "on_timeout": config.get("on_timeout", "reject"),
                "on_reject": config.get("on_reject", "fail"),
                "expires_at": now + math.ceil(float(hours) * HOUR_MS) if hours else None,
                "created_at": now,
            }
        )
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = (
        module.insert(table_of(Approval))
        .on_conflict_do_nothing(index_elements=["run_id", "item_seq", "step_id"])
        .returning(table_of(Approval).c.id)
    )
    inserted = 0
    for start in range(0, len(rows), 1000):
        inserted += len(session.execute(statement, rows[start : start + 1000]).all())
    return inserted


def _lock_runs(session: Session, run_ids: Iterable[str]) -> dict[str, Run]:
    """Lock the runs (in id order, the order every locker uses) and return them, fresh."""
    ids = sorted(set(run_ids))
    if not ids:
        return {}
    runs = session.scalars(
        select(Run)
        .where(col(Run.id).in_(ids))
        .order_by(col(Run.id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {run.id: run for run in runs}


def _gate_record(
    records: list[dict[str, Any]], step_id: str, update_with: dict[str, Any]
) -> list[dict[str, Any]]:
    """The item's step records with the gate's record (the last one for ``step_id``) updated."""
    records = [dict(r) for r in records]
    for record in reversed(records):
        if record.get("stepId") == step_id:
            output = {**(record.get("output") or {}), **update_with.pop("output", {})}
            record.update(update_with, output=output)
            return records
    records.append(
        {
            "stepId": step_id,
            "type": "approval",
            "attempts": 1,
            "error": None,
            **update_with,
        }
    )
    return records


def _move_items(
    session: Session,
    run: Run,
    decided: Sequence[Row[Any]],
    *,
    decision: str,
    comment: str | None,
    decided_by: str | None,
    now: int,
    outcome: Outcome,
) -> None:
    """Move the run's items whose approvals were just decided (``decided`` rows)."""
    by_seq = {row.item_seq: row for row in decided}
    items = session.execute(
        select(col(RunItem.seq), col(RunItem.step_results))
        .where(
            col(RunItem.run_id) == run.id,
            col(RunItem.seq).in_(list(by_seq)),
            col(RunItem.status) == AWAITING,
        )
        .with_for_update()
    ).all()
    updates: list[dict[str, Any]] = []
    failed = 0
    for seq, records in items:
        approval = by_seq[seq]
        # A timeout decides per the gate's onTimeout; a reviewer per their decision.
        proceed = (
            (approval.on_timeout == "approve") if decision == EXPIRED else decision == APPROVED
        )
        verdict = "approved" if proceed else "rejected"
        output = {
            "decision": decision,
            "verdict": verdict,
            "comment": comment,
            "decidedBy": decided_by,
        }
        gate = _gate_index(run, approval.step_id)
        waited = max(0, now - int(approval.created_at))
        if proceed or approval.on_reject == "stop":
            # Back to pending: a lane claims it and carries on after the gate, or (stop)
            # completes it with its changes so far through the engine's ordinary path.
            next_step = gate + 1 if proceed else len(run.steps or [])
            updated = _gate_record(
                records or [],
                approval.step_id,
                {
                    "status": ItemStatus.COMPLETED,
                    "output": output,
                    "durationMs": waited,
                    "error": None,
                },
            )
            updates.append(
                {
                    "b_seq": seq,
                    "b_status": ItemStatus.PENDING,
                    "b_next_step": next_step,
                    "b_results": updated,
                    "b_error": None,
                    "b_completed_at": None,
                }
            )
            outcome.resumed[run.id] += 1
        else:
            # TODO(engine): a rejected item that holds a checkpoint ``state`` ends failed here
            # without its finished steps' changes; if keepPartialChanges should apply to it,
            # route it through a lane like ``stop`` (pending, with a "fail" marker) instead.
            reason = f"rejected at review gate '{approval.step_id}'"
            if decision == EXPIRED:
                reason = f"no decision at review gate '{approval.step_id}' before its timeout"
            if comment:
                reason += f": {comment}"
            updated = _gate_record(
                records or [],
                approval.step_id,
                {
                    "status": ItemStatus.FAILED,
                    "output": output,
                    "durationMs": waited,
                    "error": reason,
                },
            )
            updates.append(
                {
                    "b_seq": seq,
                    "b_status": ItemStatus.FAILED,
                    "b_next_step": gate,
                    "b_results": updated,
                    "b_error": reason,
                    "b_completed_at": now,
                }
            )
            failed += 1
    if updates:
        items_table = table_of(RunItem)
        session.connection().execute(
            items_table.update()
            .where(
                items_table.c.run_id == run.id,
                items_table.c.seq == bindparam("b_seq"),
                items_table.c.status == AWAITING,
            )
            .values(
                status=bindparam("b_status"),
                next_step=bindparam("b_next_step"),
                step_results=bindparam("b_results", type_=items_table.c.step_results.type),
                error=bindparam("b_error"),
                completed_at=bindparam("b_completed_at"),
                claim_token=None,
                lease_expires_at=None,
            ),
            updates,
        )
    if failed:
        session.execute(
            update(Run).where(col(Run.id) == run.id).values(failed=col(Run.failed) + failed)
        )
        outcome.finished.add(run.id)


def _decide(
    session: Session,
    *,
    where: list[Any],
    decision: str,
    comment: str | None,
    decided_by: str | None,
    outcome: Outcome,
) -> None:
    """Decide the pending approvals matching ``where`` (one guarded UPDATE) and move items."""
    run_ids = session.scalars(
        select(col(Approval.run_id)).where(*where, col(Approval.status) == PENDING).distinct()
    ).all()
    runs = _lock_runs(session, run_ids)
    if not runs:
        return
    now = now_ms()
    approvals = table_of(Approval)
    # The "exactly once": only a pending approval can be decided, and only by one UPDATE.
    decided = session.execute(
        update(Approval)
        .where(*where, col(Approval.status) == PENDING, col(Approval.run_id).in_(list(runs)))
        .values(status=decision, decided_at=now, decided_by=decided_by, comment=comment)
        .returning(
            approvals.c.run_id,
            approvals.c.item_seq,
            approvals.c.step_id,
            approvals.c.on_reject,
            approvals.c.on_timeout,
            approvals.c.created_at,
        )
    ).all()
    outcome.decided += len(decided)
    per_run: dict[str, list[Row[Any]]] = defaultdict(list)
    for row in decided:
        per_run[row.run_id].append(row)
    for run_id, rows in sorted(per_run.items()):
        _move_items(
            session,
            runs[run_id],
            rows,
            decision=decision,
            comment=comment,
            decided_by=decided_by,
            now=now,
            outcome=outcome,
        )


def after_commit(session: Session, queue: TaskQueue, outcome: Outcome) -> None:
    """Queue lanes for runs with resumed entities; finalize runs whose last items ended."""
    for run_id, count in sorted(outcome.resumed.items()):
        for _ in range(min(MAX_LANES, max(1, math.ceil(count / ENTITIES_PER_LANE)))):
            queue.enqueue(PROCESS_LANE, run_id)
    if outcome.finished:
        for run_id in sorted(outcome.finished):
            finalize_and_notify(session, queue, run_id)


def _decision_status(decision: str) -> str:
    return {"approve": APPROVED, "reject": REJECTED}[decision]


def get_approval(*, session: Session, workspace_id: str, approval_id: str) -> Approval:
    """The approval, or 404 (also for another workspace's)."""
    return get_owned(session, Approval, approval_id, workspace_id, what="Approval")


def decide_approval(
    *,
    session: Session,
    queue: Any,
    workspace_id: str,
    approval_id: str,
    decision: str,
    comment: str | None = None,
    decided_by: str | None = None,
) -> Approval:
    """Approve or reject one approval (``decision``: approve|reject); 409 if already decided.

    Commits, then queues the run's lanes. Returns the decided approval.
    """
    get_approval(session=session, workspace_id=workspace_id, approval_id=approval_id)
    outcome = Outcome()
    _decide(
        session,
        where=[col(Approval.id) == approval_id, col(Approval.workspace_id) == workspace_id],
        decision=_decision_status(decision),
        comment=comment,
        decided_by=decided_by,
        outcome=outcome,
    )
    if outcome.decided == 0:
        session.rollback()
        current = get_approval(session=session, workspace_id=workspace_id, approval_id=approval_id)
        session.refresh(current)
        raise Conflict(f"This approval is already {current.status}.")
    session.commit()
    after_commit(session, queue, outcome)
    approval = get_approval(session=session, workspace_id=workspace_id, approval_id=approval_id)
    session.refresh(approval)
    return approval


def decide_approvals(
    *,
    session: Session,
    queue: Any,
    workspace_id: str,
    decision: str,
    ids: Sequence[str] | None = None,
    run_id: str | None = None,
    step_id: str | None = None,
    comment: str | None = None,
    decided_by: str | None = None,
) -> int:
    """Decide many: the ``ids``, or every pending approval of ``run_id`` (at ``step_id``).

    Already-decided approvals are skipped (not an error), so two reviewers deciding the
    same set concurrently decide each approval once between them. Unknown ids are a 422.
    Commits, then queues lanes; returns how many this call decided.
    """
    where: list[Any] = [col(Approval.workspace_id) == workspace_id]
    if ids is not None:
        unique = list(dict.fromkeys(ids))
        found = set(
            session.scalars(select(col(Approval.id)).where(*where, col(Approval.id).in_(unique)))
        )
        missing = [i for i in unique if i not in found]
        if missing:
            raise ValidationFailed(
                f"{len(missing)} approval id(s) are unknown.", {"ids": missing[:1000]}
            )
        where.append(col(Approval.id).in_(unique))
    else:
        if run_id is None:
            raise ValidationFailed("Give ids or filter.runId.", {"filter.runId": ["Required."]})
        get_owned(session, Run, run_id, workspace_id, what="Run")
        where.append(col(Approval.run_id) == run_id)
        if step_id is not None:
            where.append(col(Approval.step_id) == step_id)
    outcome = Outcome()
    _decide(
        session,
        where=where,
        decision=_decision_status(decision),
        comment=comment,
        decided_by=decided_by,
        outcome=outcome,
    )
    audit.annotate(session, decided=outcome.decided)  # the request's audit entry gets the count
    session.commit()
    after_commit(session, queue, outcome)
    return outcome.decided


def expire_approvals(session: Session, *, queue: Any, now_ms: int, limit: int = 1000) -> int:
    """For the sweeper: apply ``onTimeout`` to up to ``limit`` approvals past ``expiresAt``.

    Each becomes ``expired``; its entity continues (``onTimeout: approve``) or is rejected
    per the gate's ``onReject``. Commits, then queues lanes and finalizes runs. Returns
    how many expired.
    """
    due = list(
        session.scalars(
            select(col(Approval.id))
            .where(
                col(Approval.status) == PENDING,
                col(Approval.expires_at).is_not(None),
                col(Approval.expires_at) <= now_ms,
            )
            .order_by(col(Approval.expires_at))
            .limit(limit)
        )
    )
    if not due:
        session.rollback()
        return 0
    outcome = Outcome()
    _decide(
        session,
        where=[col(Approval.id).in_(due)],
        decision=EXPIRED,
        comment="no decision before the gate's timeout",
        decided_by=None,
        outcome=outcome,
    )
    session.commit()
    after_commit(session, queue, outcome)
    return outcome.decided


def close_for_cancel(session: Session, *, run_id: str, now: int) -> int:
    """Cancel's part (the caller holds the run's lock and commits); returns items cancelled.

    The run's pending approvals expire. Its waiting items end ``cancelled`` like items that
    never started, except those holding a checkpoint (changes of the steps before the
    gate): like any resumed item of a cancelled run, they go back to ``pending`` for a lane
    to cancel, which keeps their finished steps' changes as the workflow says.
    """
    session.execute(
        update(Approval)
        .where(col(Approval.run_id) == run_id, col(Approval.status) == PENDING)
        .values(status=EXPIRED, decided_at=now, comment="run cancelled before a decision")
    )
    session.execute(
        update(RunItem)
        .where(
            col(RunItem.run_id) == run_id,
            col(RunItem.status) == AWAITING,
            col(RunItem.state).is_not(None),
        )
        .values(status=ItemStatus.PENDING, claim_token=None, lease_expires_at=None)
    )
    result = session.execute(
        update(RunItem)
        .where(col(RunItem.run_id) == run_id, col(RunItem.status) == AWAITING)
        .values(
            status=ItemStatus.CANCELLED,
            error="run cancelled while awaiting approval",
            completed_at=now,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def awaiting_counts(session: Session, run_ids: Sequence[str]) -> dict[str, int]:
    """``{run_id: items awaiting approval}`` for these runs (index-only counts)."""
    if not run_ids:
        return {}
    rows = session.execute(
        select(col(RunItem.run_id), func.count())
        .where(col(RunItem.run_id).in_(list(run_ids)), col(RunItem.status) == AWAITING)
        .group_by(col(RunItem.run_id))
    ).all()
    return {run_id: int(count) for run_id, count in rows}
