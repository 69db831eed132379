"""Walk one entity through a workflow's steps: outcomes, forward gotos, retries, timeouts.

The job layer calls :func:`run_step` step by step (so it can checkpoint between steps);
:func:`walk` runs a whole entity in one go. Nothing here touches a database.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from steps import retry
from steps.base import (
    Action,
    EntityState,
    SideEffect,
    StepContext,
    StepRecord,
    StepResult,
    StepServices,
)
from steps.errors import Interrupted, StepError, TransientError
from steps.registry import get_step_type


def side_effect_of(step_type: str) -> SideEffect:
    """What a step type does outside the working copy (its module's ``SIDE_EFFECT``)."""
    return SideEffect(getattr(get_step_type(step_type), "SIDE_EFFECT", SideEffect.NONE))


@dataclass
class EntityProgress:
    """Where one entity is in the workflow."""

    entity: EntityState
    next_step: int = 0
    status: str = "running"  # running | awaiting_approval | completed | failed | cancelled
    error: str | None = None
    # StepRecords, held as plain dicts: the engine (jobs/checkpoint.py) reads them as such.
    records: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"inputTokens": 0, "outputTokens": 0})
    paused: float = 0.0  # seconds spent waiting for a turn (rate limits): not on its clock

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """Outputs of the finished steps, by step id (the ``steps`` template variable)."""
        return {r["stepId"]: r["output"] for r in self.records if r["status"] == "completed"}

    @property
    def done(self) -> bool:
        return self.status != "running"


@dataclass
class RunInfo:
    """What a step needs to know about its run."""

    run: dict[str, Any]
    steps: list[dict[str, Any]]
    settings: dict[str, Any]
    input: Any = None
    entity_schema: dict[str, Any] | None = None
    dry_run: bool = False

    def __post_init__(self) -> None:
        self.index_of = {step["id"]: i for i, step in enumerate(self.steps)}
        self._configs: dict[int, dict[str, Any]] = {}

    def config(self, index: int) -> dict[str, Any]:
        """The loaded config of step ``index``, loaded once per run."""
        config = self._configs.get(index)
        if config is None:
            step = self.steps[index]
            config = get_step_type(step["type"]).Config().load(step.get("config") or {})
            self._configs[index] = config
        return config


def backoff_delay(attempt: int, base_seconds: float, retry_after: float | None) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (1-based), at least the
    server's ``retry_after`` (``steps.retry``; the jitter is drawn from this module's
    ``random``)."""
    return retry.backoff_delay(attempt, base_seconds, retry_after, uniform=random.uniform)


def run_step(
    progress: EntityProgress,
    info: RunInfo,
    *,
    services: StepServices | None = None,
    deadline: float | None = None,
    timeout_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> StepRecord:
    """Run the entity's next step, with retries; update ``progress``; return the step record.

    ``deadline`` is on ``clock``; ``timeout_seconds`` (else the run's entity timeout) is
    only for the message of an entity that ran out of time.
    """
    index = progress.next_step
    step = info.steps[index]
    retry = info.settings.get("retry") or {}
    max_attempts = int(retry.get("max_attempts", 1))
    base_seconds = float(retry.get("backoff_seconds", 1.0))
    started = clock()
    record: StepRecord = {
        "stepId": step["id"],
        "type": step["type"],
        "status": "running",
        "output": None,
        "error": None,
        "durationMs": 0,
        "attempts": 0,
    }
    result: StepResult | None = None
    error: str | None = None
    for attempt in range(1, max_attempts + 1):
        if deadline is not None and clock() >= deadline:
            timeout = timeout_seconds or info.settings.get("entity_timeout_seconds")
            error = f"entity timed out after {timeout:g}s" if timeout else "entity timed out"
            break
        record["attempts"] = attempt
        try:
            working = progress.entity.copy()
            ctx = StepContext(
                entity=working,
                step_id=step["id"],
                step_index=index,
                run=info.run,
                input=info.input,
                outputs=progress.outputs,
                entity_schema=info.entity_schema,
                services=services,
                deadline=deadline,
                clock=clock,
                should_stop=should_stop,
                dry_run=info.dry_run,
            )
            try:
                result = get_step_type(step["type"]).run(info.config(index), ctx)
            finally:
                progress.paused += ctx.paused
                if deadline is not None:
                    deadline += ctx.paused
            progress.entity = working
            error = None
            break
        except Interrupted:
            record["status"] = "cancelled"
            progress.status, progress.error = "cancelled", "run cancelled"
            record["durationMs"] = int((clock() - started) * 1000)
            progress.records.append(cast(dict[str, Any], record))
            return record
        except RecursionError:
            error = "the entity's data is nested too deeply to process"
            break
        except StepError as exc:
            error = exc.message
            if not exc.retryable or attempt == max_attempts:
                break
            retry_after = exc.retry_after if isinstance(exc, TransientError) else None
            delay = backoff_delay(attempt, base_seconds, retry_after)
            if deadline is not None:
                delay = min(delay, max(0.0, deadline - clock()))
            sleep(delay)
        except Exception as exc:  # a bug or bad data in one entity fails that entity alone
            error = f"{type(exc).__name__}: {exc}"
            break
    record["durationMs"] = int((clock() - started) * 1000)
    if result is None:
        record["status"] = "failed"
        record["error"] = error
        progress.status, progress.error = "failed", f"{step['id']}: {error}"
    else:
        _apply(progress, info, index, result, record)
    progress.records.append(cast(dict[str, Any], record))
    return record


def _apply(
    progress: EntityProgress, info: RunInfo, index: int, result: StepResult, record: StepRecord
) -> None:
    """Record a finished step and move the entity to its next step or final state."""
    record["status"] = "completed"
    record["output"] = result.output
    if result.usage:
        for key in ("inputTokens", "outputTokens"):
            progress.usage[key] += int(result.usage.get(key, 0))
    if result.action is Action.FAIL:
        record["status"] = "failed"
        record["error"] = result.error
        progress.status = "failed"
        progress.error = f"{record['stepId']}: {result.error or 'failed'}"
        return
    if result.action is Action.WAIT:
        record["status"] = "awaiting_approval"
        progress.status = "awaiting_approval"
        return
    if result.action is Action.STOP:
        progress.status = "completed"
        progress.next_step = len(info.steps)
        return
    if result.action is Action.GOTO:
        target = info.index_of.get(result.goto or "")
        if target is None or target <= index:
            record["status"] = "failed"
            record["error"] = f"goto {result.goto!r} is not a later step"
            progress.status, progress.error = "failed", f"{record['stepId']}: {record['error']}"
            return
        progress.next_step = target
    else:
        progress.next_step = index + 1
    if progress.next_step >= len(info.steps):
        progress.status = "completed"


def walk(
    progress: EntityProgress,
    info: RunInfo,
    *,
    services: StepServices | None = None,
    timeout_seconds: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> EntityProgress:
    """Run the entity through all its remaining steps in this process."""
    deadline = clock() + timeout_seconds if timeout_seconds else None
    while not progress.done and progress.next_step < len(info.steps):
        run_step(
            progress,
            info,
            services=services,
            deadline=deadline,
            timeout_seconds=timeout_seconds,
            clock=clock,
            sleep=sleep,
        )
    if not progress.done:
        progress.status = "completed"
    return progress
