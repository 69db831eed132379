"""Typed shapes of the answers a caller reads most: runs, their progress and items.

Other resources are plain ``dict[str, Any]`` (the API's camelCase JSON).
"""

from __future__ import annotations

from typing import Any, TypedDict


class RunCreated(TypedDict, total=False):
    """``runs.start`` / ``runs.retry``: the new run (``workflowId`` added by the client)."""

    jobId: str
    runId: str
    workflowId: str


class Progress(TypedDict, total=False):
    total: int
    completed: int
    failed: int
    cancelled: int
    pending: int
    awaitingApproval: int


class Run(TypedDict, total=False):
    id: str
    workflowId: str
    workflowVersion: int
    jobId: str
    status: str
    progress: Progress
    trigger: dict[str, Any]
    retryOf: str | None
    input: Any
    usage: dict[str, int]
    error: str | None
    createdAt: int | None
    startedAt: int | None
    completedAt: int | None


class StepResult(TypedDict, total=False):
    stepId: str
    type: str
    status: str
    output: Any
    error: str | None
    durationMs: int | None
    attempts: int | None


class RunItem(TypedDict, total=False):
    entityId: str
    status: str
    attempts: int
    error: str | None
    steps: list[StepResult]
    startedAt: int | None
    completedAt: int | None
