"""``POST /api/v1/workflows/generate``: a workflow from a description, streamed as NDJSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app
from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.schemas.generation import GenerateSchema
from app.services import generation as service
from app.services.credentials import secret_box
from steps.clients.outbound import OutboundPolicy

URL_PREFIX = "/workflows"
blp = Blueprint(
    "generation", __name__, description="Workflow generation from a description (NDJSON)."
)

_EXAMPLE = "\n".join(
    json.dumps(line)
    for line in (
        {"op": "setName", "name": "Describe new products", "description": None},
        {
            "op": "addStep",
            "step": {
                "id": "describe",
                "type": "ai_generate",
                "name": None,
                "config": {
                    "provider": "template",
                    "prompt": "Describe {{ entity.data.title }}",
                    "outputField": "description",
                },
            },
        },
        {"op": "explain", "text": "Writes a description for each product."},
        {
            "op": "done",
            "workflow": {
                "name": "Describe new products",
                "description": None,
                "entityTypeId": "et_01JD8X0M5Q6W7E8R9T0Y1U2I3Q",
                "status": "draft",
                "steps": ["..."],
            },
        },
    )
)


@blp.route("/generate")
class WorkflowGenerate(MethodView):
    @require_role("editor")
    @blp.arguments(
        GenerateSchema,
        example={
            "prompt": "Write a two-sentence description of each product, then publish it",
            "entityTypeId": "et_01JD8X0M5Q6W7E8R9T0Y1U2I3Q",
        },
    )
    @blp.response(
        200,
        {"type": "string"},
        content_type="application/x-ndjson",
        description="One operation per line: setName, addStep, setSettings, explain; then "
        "done (with the workflow, unsaved) or error (with the failing path)",
        example=_EXAMPLE + "\n",
    )
    def post(self, data: dict[str, Any]) -> Any:
        """Generate a workflow from a description with the workspace's LLM (streamed NDJSON)"""
        caller = current_caller()
        session = db_session()
        settings = current_app.config["CONVEYOR"]
        entity_type = service.entity_type_for(
            session=session, workspace_id=caller.workspace_id, type_id=data["entity_type_id"]
        )
        credential = service.llm_credential(
            session=session,
            workspace_id=caller.workspace_id,
            name=data.get("credential"),
            box=secret_box(settings),
        )
        # Release the request's transaction (on SQLite, a write lock) before the model streams.
        session.rollback()
        operations = service.generate(
            engine=current_app.extensions["conveyor.engine"],
            workspace_id=caller.workspace_id,
            entity_type=entity_type,
            credential=credential,
            prompt=data["prompt"],
            model=data.get("model"),
            policy=OutboundPolicy(settings.outbound_allow_hosts),
        )

        def lines() -> Iterator[str]:
            for operation in operations:
                yield json.dumps(operation, ensure_ascii=False) + "\n"

        return Response(
            lines(),
            mimetype="application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
