"""Completing the OpenAPI document: operationIds, examples, and the operational endpoints.

Nothing here is written per endpoint. An apispec plugin sees every operation as a
blueprint registers it and

- names it ``<resource>_<method>``, the Python client's ``client.<resource>.<method>()``:
  the resource is the blueprint's name, the method follows from the HTTP verb and the
  path after the resource's own segment (``GET /workflows`` → ``workflows_list``,
  ``GET /workflows/{id}`` → ``workflows_get``, ``POST …/runs/{runId}/cancel`` →
  ``runs_cancel``, ``GET /jobs/{id}/logs`` → ``jobs_logs``); a few irregular paths are
  named in ``OPERATION_IDS``; an operationId given with ``@blp.doc`` wins;
- attaches to each JSON request body and response the example of its component schema
  from ``app.api.examples`` (an example given with ``@blp.response(..., example=...)``
  or ``@blp.arguments(..., example=...)`` wins).

``/healthz``, ``/readyz`` and ``/metrics`` live outside the API blueprints; they are
added as paths here.
"""

from __future__ import annotations

import copy
import http
import re
from typing import Any

from apispec import BasePlugin
from werkzeug.routing import Map, Rule

from app.api.examples import EXAMPLES

_OPERATIONAL = ("healthz", "readyz", "metrics")

# (METHOD, path) → operationId, where the rule below would not give the client's name.
OPERATION_IDS: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/me"): "me_get",
    ("POST", "/api/v1/entities/bulk"): "entities_bulk_create",
    ("POST", "/api/v1/workflows/{workflow_id}/run"): "runs_start",
    ("POST", "/api/v1/webhooks/{trigger_id}"): "webhooks_fire",
    ("GET", "/api/v1/workflows/{workflow_id}/code"): "workflows_code",
    ("GET", "/api/v1/workflows/{workflow_id}/project.zip"): "workflows_project_zip",
    ("POST", "/api/v1/workflows/generate"): "workflows_generate",
    ("GET", "/api/v1/kv/{namespace}"): "kv_list",
}

_ITEM_VERBS = {"get": "get", "patch": "update", "put": "update", "delete": "delete"}
_COLLECTION_VERBS = {"get": "list", "post": "create", "put": "replace", "delete": "delete_many"}
_SCHEMA_REF = re.compile(r"^#/components/schemas/(.+)$")


def operation_id(resource: str, method: str, path: str) -> str:
    """``workflows_list``: the client's ``<resource>.<method>`` for this operation."""
    if (method.upper(), path) in OPERATION_IDS:
        return OPERATION_IDS[(method.upper(), path)]
    segments = [s for s in path.removeprefix("/api/v1").split("/") if s]
    noun = resource.replace("_", "-")
    # What follows the resource's own segment (its last occurrence): an id, actions, nouns.
    rest = segments
    if noun in segments:
        rest = segments[len(segments) - 1 - segments[::-1].index(noun) + 1 :]
    words = [s.replace("-", "_").replace(".", "_") for s in rest if not s.startswith("{")]
    ends_with_id = bool(rest) and rest[-1].startswith("{")
    if not words:
        verbs = _ITEM_VERBS if ends_with_id else _COLLECTION_VERBS
        return f"{resource}_{verbs.get(method, method)}"
    name = "_".join(words)
    if ends_with_id:
        name = f"{_ITEM_VERBS.get(method, method)}_{name}"
    return f"{resource}_{name}"


class ConveyorSpecPlugin(BasePlugin):
    """Gives each operation its operationId and its request/response examples."""

    def init_spec(self, spec: Any) -> None:
        self.spec = spec

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        rule = kwargs.get("rule")
        if not path or not operations:
            return
        resource = rule.endpoint.split(".", 1)[0] if rule is not None else "operations"
        for method, operation in operations.items():
            if not isinstance(operation, dict) or method == "parameters":
                continue
            operation.setdefault("operationId", operation_id(resource, method, path))
            body = operation.get("requestBody")
            if isinstance(body, dict):
                for media in body.get("content", {}).values():
                    self._add_example(media, "request")
            for response in (operation.get("responses") or {}).values():
                if isinstance(response, dict):
                    for media in response.get("content", {}).values():
                        self._add_example(media, "response")

    def _add_example(self, media: dict[str, Any], direction: str) -> None:
        """Set ``media['example']`` from the registry when the schema is a known component."""
        if "example" in media or "examples" in media:
            return
        example = example_for(media.get("schema"), direction, self._schemas())
        if example is not None:
            media["example"] = example

    def _schemas(self) -> dict[str, Any]:
        return self.spec.components.schemas


def _component(schema: Any) -> str | None:
    """The component name a ``$ref`` (or a schema object apispec resolved) points to."""
    if isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
        match = _SCHEMA_REF.match(schema["$ref"])
        return match.group(1) if match else None
    return None


def example_for(schema: Any, direction: str, components: dict[str, Any]) -> Any:
    """The registered example for ``schema`` (a component or an array of one), else None."""
    if isinstance(schema, dict) and schema.get("type") == "array":
        item = example_for(schema.get("items"), direction, components)
        return None if item is None else [item]
    name = _component(schema)
    if name is None or name not in EXAMPLES:
        return None
    return shape_for(copy.deepcopy(EXAMPLES[name]), components.get(name, {}), direction, components)


def shape_for(
    value: Any, schema: dict[str, Any], direction: str, components: dict[str, Any]
) -> Any:
    """Drop ``readOnly`` fields from a request example and ``writeOnly`` ones from a response."""
    name = _component(schema)
    if name is not None:
        schema = components.get(name, {})
    skip = "readOnly" if direction == "request" else "writeOnly"
    if isinstance(value, dict) and "properties" in schema:
        shaped = {}
        for key, item in value.items():
            prop = schema["properties"].get(key, {})
            if prop.get(skip):
                continue
            shaped[key] = shape_for(item, prop, direction, components)
        return shaped
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [shape_for(v, schema["items"], direction, components) for v in value]
    return value


def _error_content(code: int, status: str, message: str) -> dict[str, Any]:
    return {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/Error"},
            "example": {"code": code, "status": status, "message": message, "errors": {}},
        }
    }


def add_error_examples(components: Any) -> None:
    """An example on each registered error response (``DEFAULT_ERROR``, ``NOT_FOUND``…)."""
    for registry in (components.responses, components.responses_lazy):
        for name, response in registry.items():
            content = response.get("content", {}).get("application/json")
            if content is None or "example" in content:
                continue
            if name == "UNPROCESSABLE_ENTITY":
                content["example"] = EXAMPLES["Error"]
                continue
            code = {"DEFAULT_ERROR": 404}.get(name)
            phrase = response.get("description", "Error")
            if code is None:
                try:
                    code = http.HTTPStatus[name].value
                except KeyError:
                    code = 400
            if name == "DEFAULT_ERROR":
                phrase = "Not Found"
            content["example"] = {
                "code": code,
                "status": phrase,
                "message": f"{phrase}.",
                "errors": {},
            }


def add_operational_paths(spec: Any) -> None:
    """Document ``/healthz``, ``/readyz`` and ``/metrics`` (unauthenticated)."""
    # apispec's Flask plugin reads paths from werkzeug rules; these mirror app.operations'.
    rules = Map([Rule(f"/{name}", endpoint=f"operations.{name}") for name in _OPERATIONAL])
    rule = {r.endpoint.split(".")[1]: r for r in rules.iter_rules()}
    status = {"type": "object", "properties": {"status": {"type": "string"}}}
    spec.path(
        rule=rule["healthz"],
        operations={
            "get": {
                "operationId": "operations_healthz",
                "summary": "The process is up",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Up",
                        "content": {
                            "application/json": {"schema": status, "example": {"status": "ok"}}
                        },
                    }
                },
            }
        },
    )
    spec.path(
        rule=rule["readyz"],
        operations={
            "get": {
                "operationId": "operations_readyz",
                "summary": "The database and Redis answer (503 with Retry-After when not)",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Ready",
                        "content": {
                            "application/json": {"schema": status, "example": {"status": "ready"}}
                        },
                    },
                    "503": {
                        "description": "A backing service is not reachable",
                        "headers": {
                            "Retry-After": {
                                "description": "Seconds to wait before asking again",
                                "schema": {"type": "integer"},
                            }
                        },
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Error"},
                                "example": {
                                    "code": 503,
                                    "status": "Service Unavailable",
                                    "message": "A backing service is not reachable: redis: "
                                    "ConnectionError",
                                    "errors": {"services": ["redis: ConnectionError"]},
                                },
                            }
                        },
                    },
                },
            }
        },
    )
    spec.path(
        rule=rule["metrics"],
        operations={
            "get": {
                "operationId": "operations_metrics",
                "summary": "Prometheus metrics: runs, entities, step durations, queue depth, "
                "provider calls",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text format (OpenMetrics when asked by Accept)",
                        "content": {
                            "text/plain": {
                                "schema": {"type": "string"},
                                "example": "# TYPE conveyor_runs gauge\n"
                                'conveyor_runs{status="running"} 2.0\n'
                                'conveyor_runs{status="completed"} 41.0\n',
                            }
                        },
                    }
                },
            }
        },
    )
    spec.tag({"name": "operations", "description": "Health, readiness and metrics."})
