"""``/api/v1/step-types``: the registered step types and their JSON Schemas."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from app.api import Blueprint
from app.auth import require_role
from app.errors import NotFound
from app.schemas.workflows import StepTypeQueryArgsSchema, StepTypeSchema
from steps import registry
from steps.errors import UnknownStepType

URL_PREFIX = "/step-types"
blp = Blueprint("step_types", __name__, description="Step types: config and output contracts.")


def _describe(name: str) -> dict[str, Any]:
    data = registry.describe(name)
    category = getattr(registry.get_step_type(name), "CATEGORY", None)
    return {
        "type": data["type"],
        "category": None if category is None else str(category),
        "description": data["description"],
        "config_schema": data["configSchema"],
        "output_schema": data["outputSchema"],
    }


@blp.route("")
class StepTypes(MethodView):
    @require_role("viewer")
    @blp.arguments(StepTypeQueryArgsSchema, location="query")
    @blp.response(200, StepTypeSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List step types with their category and config and output JSON Schemas"""
        described = [_describe(name) for name in registry.step_type_names()]
        if "category" in args:
            described = [d for d in described if d["category"] == args["category"]]
        return described


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
