"""The HTTP API: flask-smorest ``Api``/``Blueprint`` subclasses and blueprint registration."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import flask_smorest
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException, InternalServerError

from app.errors import ConveyorError

log = logging.getLogger(__name__)

# Resource modules, each exposing ``blp``; registered in this order.
BLUEPRINT_MODULES = (
    "me",
    "api_keys",
    "entity_types",
    "entities",
    "workflows",
    "revisions",
    "step_types",
    "credentials",
    "runs",
    "jobs",
    "triggers",
    "webhooks",
    "approvals",
    "kv",
    "audit",
    "workflow_code",
    "generation",
)


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn nested marshmallow errors into ``{"steps[0].config.model": [...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            if prefix == "" and key in ("json", "query", "headers", "files", "form"):
                flat.update(flatten_errors(value, ""))
                continue
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "_schema"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
    elif isinstance(errors, list):
        if all(isinstance(e, str) for e in errors):
            flat.setdefault(prefix or "_schema", []).extend(errors)
        else:
            for item in errors:
                flat.update(flatten_errors(item, prefix))
    else:
        flat.setdefault(prefix or "_schema", []).append(str(errors))
    return flat


class Api(flask_smorest.Api):
    """flask-smorest Api with Conveyor's one error shape."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        """Every HTTP error as ``{code, status, message, errors}``."""
        payload, code, headers = super().handle_http_exception(error)
        payload.setdefault("message", error.description or error.name)
        if "errors" in payload:
            payload["errors"] = flatten_errors(payload["errors"])
            if code == 400 and list(payload["errors"]) == ["_schema"]:
                payload["message"] = " ".join(payload["errors"]["_schema"])
            if code == 422 and payload["message"] == error.description:
                payload["message"] = "The request is not valid: " + "; ".join(
                    f"{path}: {' '.join(msgs)}"
                    for path, msgs in list(payload["errors"].items())[:5]
                )
        else:
            payload["errors"] = {}
        return payload, code, headers


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint; a seam for Conveyor-wide resource defaults."""


def _error_response(code: int, name: str, message: str, errors: Any = None) -> Response:
    """A JSON error body in the SPEC shape."""
    response = jsonify({"code": code, "status": name, "message": message, "errors": errors or {}})
    response.status_code = code
    return response


def init_app(app: Flask) -> Api:
    """Create the Api, register every resource blueprint and the error handlers."""
    from app.api.openapi import ConveyorSpecPlugin, add_error_examples, add_operational_paths

    api = Api(
        app,
        spec_kwargs={
            "info": {"description": _DESCRIPTION},
            # operationIds and examples for every operation, as blueprints register them
            "extra_plugins": [ConveyorSpecPlugin()],
        },
    )
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "cvk_... API key"}
    )
    api.spec.options["security"] = [{"bearerAuth": []}]
    for name in BLUEPRINT_MODULES:
        module = importlib.import_module(f"app.api.{name}")
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.URL_PREFIX}")
    add_operational_paths(api.spec)
    add_error_examples(api.spec.components)

    @app.errorhandler(ConveyorError)
    def _conveyor_error(error: ConveyorError) -> Response:
        names = {
            404: "Not Found",
            409: "Conflict",
            412: "Precondition Failed",
            422: "Unprocessable Entity",
            503: "Service Unavailable",
        }
        response = _error_response(
            error.code, names.get(error.code, "Bad Request"), error.message, error.errors
        )
        if error.code == 503:
            response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        log.exception("unhandled error")
        from sqlalchemy.exc import OperationalError

        if isinstance(error, OperationalError):
            response = _error_response(
                503, "Service Unavailable", "The database is not reachable; try again."
            )
            response.headers["Retry-After"] = "5"
            return response
        return api.handle_http_exception(InternalServerError())

    return api


_DESCRIPTION = """Conveyor runs typed workflows over batches of entities.

Authenticate with `Authorization: Bearer cvk_...`. Errors share one shape:
`{"code", "status", "message", "errors"}`. Lists are cursor-paginated: pass `limit`
and the `cursor` from the previous page's `X-Next-Cursor` header (or follow the
`Link: rel="next"` header). Timestamps are milliseconds since the Unix epoch.
"""
