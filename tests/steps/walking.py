"""Run one step for one entity through the pipeline, with the workflow's retry settings."""

from __future__ import annotations

from typing import Any

from steps.base import EntityState
from steps.pipeline import EntityProgress, RunInfo, walk


def walk_step(
    step_type: str,
    config: dict[str, Any],
    services: Any,
    *,
    max_attempts: int | None = None,
    data: dict[str, Any] | None = None,
    sleeps: list[float] | None = None,
) -> EntityProgress:
    """The entity ``ent_1`` of ``run_1`` through one step ``step_1``; the pipeline's sleeps
    between attempts go to ``sleeps`` instead of sleeping."""
    settings = {"retry": {"max_attempts": max_attempts, "backoff_seconds": 0.01}}
    info = RunInfo(
        run={"id": "run_1", "workflowId": "wf_1", "trigger": {"type": "manual"}},
        steps=[{"id": "step_1", "type": step_type, "config": config}],
        settings=settings if max_attempts is not None else {},
    )
    recorded = sleeps if sleeps is not None else []
    entity = EntityState("ent_1", dict(data or {}), "draft", 1)
    return walk(EntityProgress(entity), info, services=services, sleep=recorded.append)
