"""Helpers for step tests: contexts, runtimes that may call local peers, and credentials."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Flask
from sqlmodel import Session

from app.config import Settings
from app.crypto import SecretBox
from app.models import Credential
from app.services.credentials import create_credential
from jobs.runtime import Runtime
from jobs.step_services import ChunkServices, build_services
from steps.base import EntityState, StepContext
from steps.clients.llm import RetryPolicy

LOCAL = ("127.0.0.1",)


def make_ctx(
    data: dict[str, Any] | None = None,
    *,
    entity_id: str = "ent_1",
    status: str = "draft",
    version: int = 1,
    outputs: dict[str, dict[str, Any]] | None = None,
    input: Any = None,
    entity_schema: dict[str, Any] | None = None,
    services: Any = None,
    step_id: str = "step_1",
    run_id: str = "run_1",
    deadline: float | None = None,
) -> StepContext:
    """A step context for one entity in a run."""
    return StepContext(
        entity=EntityState(entity_id, dict(data or {}), status, version),
        step_id=step_id,
        step_index=0,
        run={"id": run_id, "workflowId": "wf_1", "trigger": {"type": "manual"}},
        input=input,
        outputs=outputs or {},
        entity_schema=entity_schema,
        services=services,
        deadline=deadline,
    )


def runtime_for(
    app: Flask, settings: Settings, *, allow: tuple[str, ...] = LOCAL, redis_url: str | None = None
) -> Runtime:
    """A runtime on the test database whose outbound calls may reach ``allow``."""
    return Runtime(
        dataclasses.replace(settings, outbound_allow_hosts=allow, redis_url=redis_url),
        app.extensions["conveyor.engine"],
        app.extensions["conveyor.queue"],
    )


def fast_services(runtime: Runtime, workspace_id: str, run_id: str = "run_1") -> ChunkServices:
    """``build_services`` with retry backoff shrunk so tests do not wait."""
    services = build_services(runtime, workspace_id, run_id)
    services.backoff_seconds = 0.01
    services.llm.retry = RetryPolicy(max_retries=2, backoff_seconds=0.01)
    return services


def add_credential(
    session: Session,
    settings: Settings,
    workspace_id: str,
    name: str,
    type_: str,
    data: dict[str, Any],
    credential_settings: dict[str, Any] | None = None,
) -> Credential:
    """Store a credential (``data`` and settings in the API's camelCase)."""
    return create_credential(
        session=session,
        workspace_id=workspace_id,
        data={"name": name, "type": type_, "data": data, "settings": credential_settings or {}},
        box=SecretBox(settings.secret_keys),
    )
