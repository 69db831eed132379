"""``/api/v1/workflows/{id}/code`` and ``.../project.zip``: a workflow as runnable code."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.services import workflow_code as service
from app.services.workflows import get_workflow

URL_PREFIX = "/workflows"
blp = Blueprint(
    "workflow_code", __name__, description="Workflows as code: a Python script, a project ZIP."
)

_SCRIPT_EXAMPLE = '''#!/usr/bin/env python3
"""Create or update the Conveyor workflow "Describe products" and run it.
...
"""
from conveyor_client import Conveyor, ConveyorError

WORKFLOW: dict[str, Any] = {'apiVersion': 'conveyor/v1', 'kind': 'Workflow', ...}
...
'''


def _document(workflow_id: str) -> dict[str, Any]:
    session = db_session()
    workflow = get_workflow(
        session=session, workspace_id=current_caller().workspace_id, workflow_id=workflow_id
    )
    return service.workflow_document(session=session, workflow=workflow)


@blp.route("/<workflow_id>/code")
class WorkflowCode(MethodView):
    @require_role("viewer")
    @blp.response(
        200,
        {"type": "string"},
        content_type="text/x-python",
        description="A standalone script using conveyor-client (no secrets)",
        example=_SCRIPT_EXAMPLE,
    )
    def get(self, workflow_id: str) -> Any:
        """A Python script that creates-or-updates this workflow and runs it, watching progress"""
        document = _document(workflow_id)
        filename = f"{service.module_name(str(document['name']))}.py"
        return Response(
            service.render_script(document),
            mimetype="text/x-python",
            headers={"Content-Disposition": f'inline; filename="{filename}"'},
        )


@blp.route("/<workflow_id>/project.zip")
class WorkflowProject(MethodView):
    @require_role("viewer")
    @blp.response(
        200,
        {"type": "string", "format": "binary"},
        content_type="application/zip",
        description="The script, workflow.yaml, pyproject.toml and a README (no secrets)",
    )
    def get(self, workflow_id: str) -> Any:
        """A ZIP project: the script, the exported YAML, a pyproject.toml and a README"""
        document = _document(workflow_id)
        project = service.module_name(str(document["name"])).replace("_", "-")
        return Response(
            service.render_project(document),
            mimetype="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{project}.zip"'},
        )
