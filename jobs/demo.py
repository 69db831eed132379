"""``conveyor demo``: Conveyor's main job on whatever is configured (embedded by default)."""

from __future__ import annotations

from typing import Any

import click
from sqlmodel import Session

from app import migrate
from app.config import Settings
from app.db import get_engine
from app.queue import Runtime, ThreadQueue, install, queue_for
from app.services import entities as entities_service
from app.services.entities import create_entities, create_entity_type
from app.services.runs import start_run
from app.services.workflows import create_workflow
from app.services.workspaces import create_workspace
from app.statuses import RunStatus, WorkflowStatus
from app.watch import watch_run
from jobs.sweeper import start_sweeper_thread

PRODUCT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
        "description": {"type": "string"},
    },
    "required": ["title", "price"],
}

DEMO_STEPS = [
    {
        "id": "normalise",
        "type": "transform",
        "config": {
            "set": {"slug": "{{ entity.data.title | lower | replace(' ', '-') }}"},
            "status": "ready",
        },
    },
    {
        "id": "check",
        "type": "validate",
        "config": {
            "rules": [{"field": "title", "minLength": 3}, {"field": "price", "required": True}]
        },
    },
    {
        "id": "worth_it",
        "type": "condition",
        "config": {"if": "entity.data.price >= 10", "then": "continue", "else": "stop"},
    },
    {
        "id": "describe",
        "type": "ai_generate",
        "config": {
            "provider": "template",
            "prompt": "{{ entity.data.title }}: yours for {{ entity.data.price }} EUR.",
            "outputField": "description",
        },
    },
    {"id": "go_live", "type": "publish", "config": {}},
]


def run_demo(count: int) -> None:
    """Create a workspace, an entity type, ``count`` entities and a workflow; run and watch it."""
    settings = Settings.from_env()
    if settings.database_url.startswith("sqlite"):
        migrate.upgrade(settings.database_url)
    engine = get_engine(settings.database_url)
    task_queue = queue_for(settings)
    runtime = Runtime(settings, engine, task_queue)
    install(runtime)
    stop_sweeper = start_sweeper_thread(runtime) if isinstance(task_queue, ThreadQueue) else None
    with Session(engine, expire_on_commit=False) as session:
        workspace, _, key = create_workspace(session=session, name="Demo")
        entity_type = create_entity_type(
            session=session,
            workspace_id=workspace.id,
            data={"name": "Product", "description": "demo", "schema_": PRODUCT_SCHEMA},
        )
        items = [
            {
                "entity_type_id": entity_type.id,
                # Every 50th entity has an empty title, so validation fails it.
                "data": {"title": "" if i % 50 == 49 else f"Product {i}", "price": i % 40},
            }
            for i in range(count)
        ]
        # The demo's own bad data bypasses the API's schema check on purpose: minLength 1
        # would refuse it; here the workflow's validate step is what catches it.
        entity_type.schema_ = {
            **PRODUCT_SCHEMA,
            "properties": {**PRODUCT_SCHEMA["properties"], "title": {"type": "string"}},
        }
        session.add(entity_type)
        session.flush()
        rows: list[dict[str, Any]] = []
        # The bulk cap is the API's (10,000 a call): the demo creates any count in batches.
        for start in range(0, count, entities_service.MAX_BULK):
            batch = items[start : start + entities_service.MAX_BULK]
            rows.extend(create_entities(session=session, workspace_id=workspace.id, items=batch))
            session.commit()
        from app.schemas.workflows import SettingsSchema

        workflow = create_workflow(
            session=session,
            workspace_id=workspace.id,
            data={
                "name": "Publish products",
                "description": "demo",
                "entity_type_id": entity_type.id,
                "status": WorkflowStatus.ACTIVE,
                "steps": DEMO_STEPS,
                "settings": SettingsSchema().load({"toleratedFailurePercentage": 5}),
            },
        )
        run = start_run(
            session=session,
            queue=task_queue,
            workflow=workflow,
            entity_ids=[r["id"] for r in rows],
        )
    click.echo(f"workspace {workspace.id}; admin key (shown once): {key}")
    click.echo(f"running workflow {workflow.id} over {count} entities as run {run.id}")
    click.echo(f"console (after `conveyor serve`): http://127.0.0.1:8000/console/runs/{run.id}")
    if not isinstance(task_queue, ThreadQueue):
        click.echo("REDIS_URL is set: start `conveyor worker` processes to do the work.")
    final = watch_run(engine, run.id, interval=0.2)
    if isinstance(task_queue, ThreadQueue):
        task_queue.shutdown()
    if stop_sweeper is not None:
        stop_sweeper.set()
    if final is not None and final.status == RunStatus.FAILED:
        raise SystemExit(1)
