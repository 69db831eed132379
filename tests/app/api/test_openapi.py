"""The OpenAPI document is valid, and complete: operationIds, examples, operational paths.

``problems(spec)`` lists what is missing; a new endpoint without an example (or with an
operationId that collides) fails ``test_every_operation_is_complete``.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_schema_validator import OAS30ReadValidator, OAS30WriteValidator
from openapi_spec_validator import validate

from app.api.openapi import operation_id

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# A binary body (a ZIP) has no meaningful inline example.
NO_EXAMPLE_NEEDED = ("application/zip", "application/octet-stream")


@pytest.fixture
def spec(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def _resolve(spec: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` to ``#/components/...``."""
    while "$ref" in obj:
        node: Any = spec
        for part in obj["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def problems(spec: dict[str, Any]) -> list[str]:
    """Every operation without an operationId, and every body or 2xx response without example."""
    found: list[str] = []
    seen: dict[str, str] = {}
    for method, path, op in operations(spec):
        where = f"{method} {path}"
        op_id = op.get("operationId")
        if not op_id:
            found.append(f"{where}: no operationId")
        elif op_id in seen:
            found.append(f"{where}: operationId {op_id} also names {seen[op_id]}")
        else:
            seen[op_id] = where
        body = op.get("requestBody")
        if body:
            for media_type, media in _resolve(spec, body).get("content", {}).items():
                if media_type not in NO_EXAMPLE_NEEDED and not _has_example(media):
                    found.append(f"{where}: request body {media_type} has no example")
        for code, response in op.get("responses", {}).items():
            if not code.startswith("2"):
                continue
            for media_type, media in _resolve(spec, response).get("content", {}).items():
                if media_type not in NO_EXAMPLE_NEEDED and not _has_example(media):
                    found.append(f"{where}: response {code} {media_type} has no example")
    return found


def _has_example(media: dict[str, Any]) -> bool:
    return "example" in media or bool(media.get("examples"))


def test_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)


def test_every_operation_is_complete(spec: dict[str, Any]) -> None:
    assert operations(spec), "no operations in the document"
    assert problems(spec) == []


def test_the_check_catches_a_bare_operation(spec: dict[str, Any]) -> None:
    """The completeness check fails on an operation added without operationId or example."""
    spec["paths"]["/api/v1/things"] = {
        "post": {
            "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {
                "201": {
                    "description": "Created",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "204": {"description": "No content"},
            },
        }
    }
    assert problems(spec) == [
        "POST /api/v1/things: no operationId",
        "POST /api/v1/things: request body application/json has no example",
        "POST /api/v1/things: response 201 application/json has no example",
    ]


def test_operation_ids_are_the_client_method_names(spec: dict[str, Any]) -> None:
    ids = {(m, p): op["operationId"] for m, p, op in operations(spec)}
    assert ids[("GET", "/api/v1/workflows")] == "workflows_list"
    assert ids[("POST", "/api/v1/workflows")] == "workflows_create"
    assert ids[("GET", "/api/v1/workflows/{workflow_id}")] == "workflows_get"
    assert ids[("PATCH", "/api/v1/workflows/{workflow_id}")] == "workflows_update"
    assert ids[("POST", "/api/v1/workflows/{workflow_id}/run")] == "runs_start"
    assert ids[("GET", "/api/v1/workflows/{workflow_id}/runs/{run_id}/items")] == "runs_items"
    assert ids[("POST", "/api/v1/workflows/{workflow_id}/runs/{run_id}/retry")] == "runs_retry"
    assert ids[("POST", "/api/v1/entities/bulk")] == "entities_bulk_create"
    assert ids[("GET", "/api/v1/jobs/{job_id}/logs")] == "jobs_logs"
    for op_id in ids.values():
        assert op_id.isidentifier() and op_id == op_id.lower(), op_id


def test_operational_endpoints_are_documented(spec: dict[str, Any], client: FlaskClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        op = spec["paths"][path]["get"]
        assert op["security"] == []
        assert client.get(path).status_code == 200
    assert "503" in spec["paths"]["/readyz"]["get"]["responses"]


def test_examples_match_their_schemas(spec: dict[str, Any]) -> None:
    """Each JSON example validates against its schema (requests without readOnly fields)."""
    checked = 0
    errors: list[str] = []
    for method, path, op in operations(spec):
        media_list: list[tuple[str, dict[str, Any], type]] = []
        if op.get("requestBody"):
            for media in _resolve(spec, op["requestBody"]).get("content", {}).values():
                media_list.append(("request", media, OAS30WriteValidator))
        for code, response in op.get("responses", {}).items():
            for media in _resolve(spec, response).get("content", {}).values():
                media_list.append((code, media, OAS30ReadValidator))
        for where, media, validator_cls in media_list:
            if "example" not in media or "schema" not in media:
                continue
            root = {**media["schema"], "components": spec["components"]}
            validator = validator_cls(root)
            for error in validator.iter_errors(media["example"]):
                errors.append(f"{method} {path} {where}: {error.message}")
            checked += 1
    assert checked > 50
    assert errors == []


@pytest.mark.parametrize(
    ("resource", "method", "path", "expected"),
    [
        ("widgets", "get", "/api/v1/widgets", "widgets_list"),
        ("widgets", "post", "/api/v1/widgets", "widgets_create"),
        ("widgets", "delete", "/api/v1/widgets", "widgets_delete_many"),
        ("widgets", "put", "/api/v1/widgets/{widget_id}", "widgets_update"),
        ("widgets", "post", "/api/v1/widgets/{widget_id}/polish", "widgets_polish"),
        ("widgets", "get", "/api/v1/widgets/{widget_id}/parts", "widgets_parts"),
        ("widgets", "get", "/api/v1/widgets/{widget_id}/parts/{part_id}", "widgets_get_parts"),
        ("sprockets", "get", "/api/v1/widgets/{widget_id}/sprockets", "sprockets_list"),
        ("widget_kinds", "get", "/api/v1/widget-kinds/{kind}", "widget_kinds_get"),
    ],
)
def test_operation_ids_are_derived_from_blueprint_and_path(
    resource: str, method: str, path: str, expected: str
) -> None:
    """A new endpoint gets its name without anyone writing it down."""
    assert operation_id(resource, method, path) == expected


# Operations anyone may call: the operational endpoints (the docs and the console are not
# in the document).
UNAUTHENTICATED = ("/healthz", "/readyz", "/metrics")


def test_every_authenticated_operation_documents_401_and_403(spec: dict[str, Any]) -> None:
    """``require_role`` documents, on each operation, the 401 and 403 it can answer."""
    missing = []
    checked = 0
    for method, path, op in operations(spec):
        if path in UNAUTHENTICATED:
            assert "401" not in op["responses"] and op.get("security") == []
            continue
        checked += 1
        for code in ("401", "403"):
            response = op["responses"].get(code)
            if response is None:
                missing.append(f"{method} {path}: no {code}")
                continue
            media = _resolve(spec, response)["content"]["application/json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path)
            example = media["example"]
            assert set(example) == {"code", "status", "message", "errors"}
            assert example["code"] == int(code), (method, path)
    assert missing == []
    assert checked == len(operations(spec)) - len(UNAUTHENTICATED)


def test_documented_403_names_the_role_the_operation_needs(
    spec: dict[str, Any], client: FlaskClient, keys: Any
) -> None:
    op = spec["paths"]["/api/v1/workflows"]["post"]
    documented = op["responses"]["403"]["content"]["application/json"]["example"]
    assert documented["message"] == "This needs the 'editor' role; this key is 'executor'."
    listing = spec["paths"]["/api/v1/workflows"]["get"]["responses"]["403"]
    assert "'viewer'" in listing["description"]
    assert "'editor'" in op["responses"]["403"]["description"]

    # What the API answers has the documented shape and wording.
    answered = client.post("/api/v1/workflows", json={}, headers=keys.header("executor"))
    assert answered.status_code == 403
    assert answered.json == documented
    unauthenticated = client.get("/api/v1/workflows")
    assert unauthenticated.status_code == 401
    documented_401 = op["responses"]["401"]["content"]["application/json"]["example"]
    assert unauthenticated.json == documented_401
