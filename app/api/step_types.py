"""``/api/v1/step-types``: the registered step types and their JSON Schemas."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api import Blueprint
from app.auth import require_role
from app.errors import NotFound
from app.schemas.workflows import StepTypeSchema
from steps import registry
from steps.errors import UnknownStepType

URL_PREFIX = "/step-types"
blp = Blueprint("step_types", __name__, description="Step types: config and output contracts.")


def _describe(name: str) -> dict[str, Any]:
    data = registry.describe(name)
    return {
        "type": data["type"],
        "description": data["description"],
        "config_schema": data["configSchema"],
        "output_schema": data["outputSchema"],
    }


@blp.route("")
class StepTypes(MethodView):
    @require_role("viewer")
    @blp.response(200, StepTypeSchema(many=True))
    def get(self) -> Any:
        """List step types with their config and output JSON Schemas"""
        return [_describe(name) for name in registry.step_type_names()]


@blp.route("/<step_type>")
class StepTypesByName(MethodView):
    @require_role("viewer")
    @blp.response(200, StepTypeSchema)
    def get(self, step_type: str) -> Any:
        """Get one step type"""
        try:
            return _describe(step_type)
        except UnknownStepType as exc:
            raise NotFound(f"Unknown step type {step_type!r}.") from exc
