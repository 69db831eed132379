"""The HTTP API: flask-smorest ``Api``/``Blueprint`` subclasses and blueprint registration."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from typing import Any

import flask_smorest
from flask import Flask, Response, jsonify, request
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException, InternalServerError, RequestEntityTooLarge
from werkzeug.routing import IntegerConverter

from app import jsonbody
from app.errors import ConveyorError, ValidationFailed, flatten_errors

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


class Api(flask_smorest.Api):
    """flask-smorest Api with Conveyor's one error shape."""

    def handle_http_exception(self, error: HTTPException) -> Any:
        """Every HTTP error as ``{code, status, message, errors}``."""
        payload, code, headers = super().handle_http_exception(error)
        # The exception's own headers too: ``Allow`` on a 405, ``Retry-After`` on a 503...
        own = {k: v for k, v in error.get_headers() if k.lower() != "content-type"}
        headers = {**own, **(headers or {})}
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


class Parser(FlaskParser):
    """webargs' parser with Conveyor's one strict JSON loader (``app.jsonbody``)."""

    def _raw_load_json(self, req: Any) -> Any:
        if not is_json_request(req):
            return core.missing
        raw = req.get_data(cache=True)
        if not raw.strip():
            return core.missing
        return jsonbody.loads(raw)


def _require_json_body(view: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse a request without a JSON body where the operation declares one required."""

    @functools.wraps(view)
    def check(*args: Any, **kwargs: Any) -> Any:
        if not request.get_data(cache=True).strip():
            raise jsonbody.MalformedJSON("This operation needs a JSON request body.")
        if not request.is_json:
            raise jsonbody.MalformedJSON(
                "The request body must be JSON (Content-Type: application/json)."
            )
        return view(*args, **kwargs)

    return check


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest Blueprint: strict JSON parsing, and required bodies are required."""

    ARGUMENTS_PARSER = Parser()

    def arguments(self, schema: Any, *, location: str = "json", **kwargs: Any) -> Any:
        """``@blp.arguments``; a JSON body declared required (the default) must be sent."""
        decorator = super().arguments(schema, location=location, **kwargs)
        if location != "json" or not kwargs.get("required", True):
            return decorator
        return lambda view: _require_json_body(decorator(view))


def _error_response(code: int, name: str, message: str, errors: Any = None) -> Response:
    """A JSON error body in the SPEC shape."""
    response = jsonify({"code": code, "status": name, "message": message, "errors": errors or {}})
    response.status_code = code
    return response


def _refuse_unstorable_url_and_headers() -> None:
    """422 for a path, query parameter or header holding NUL or an unpaired surrogate:
    no id, filter or key can hold one, and PostgreSQL refuses them."""
    found: dict[str, list[str]] = {}
    reason = jsonbody.unstorable_reason(request.path)
    if reason:
        found["path"] = [reason]
    for key, value in request.args.items(multi=True):
        if reason := jsonbody.unstorable_reason(key):
            found.setdefault(f"query.{ascii(key)}", []).append(f"A parameter name: {reason}")
        elif reason := jsonbody.unstorable_reason(value):
            found.setdefault(key, []).append(reason)
    for key, value in request.headers.items():
        reason = jsonbody.unstorable_reason(value)
        if reason:
            found.setdefault(f"headers.{key}", []).append(reason)
    if found:
        raise ValidationFailed(
            "The request's URL or headers hold characters that cannot be stored.", found
        )


class CounterConverter(IntegerConverter):
    """``<int:...>`` path parts (revision versions...) are counters that fit the database's
    INTEGER column: a larger number matches no route (404), it never reaches SQL."""

    def __init__(self, map: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def init_app(app: Flask) -> Api:
    """Create the Api, register every resource blueprint and the error handlers."""
    from app.api.openapi import ConveyorSpecPlugin, add_error_examples, add_operational_paths

    app.url_map.converters["int"] = CounterConverter
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

    app.request_class = jsonbody.BoundedRequest
    app.json = jsonbody.StrictJSONProvider(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.before_request(_refuse_unstorable_url_and_headers)

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

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Any:
        # The refused body is still on the connection. Read it off (up to a bound), so a
        # keep-alive connection carries the client's next request cleanly; servers drain
        # little themselves (gunicorn 64 KB, then it closes under a keep-alive answer).
        # Past the bound, say the connection closes.
        payload, code, headers = api.handle_http_exception(error)
        response = jsonify(payload)
        response.status_code = code
        response.headers.update(headers)
        drained = isinstance(request, jsonbody.BoundedRequest) and request.discard_body()
        if not drained:
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        if isinstance(error, HTTPException):
            return api.handle_http_exception(error)
        log.exception("unhandled error")
        from sqlalchemy.exc import DataError, OperationalError

        if isinstance(error, DataError):
            # A value the database refuses (out of range, bad encoding) that no schema
            # caught: the client's input, so a 422 (logged above: a check is missing).
            return _error_response(
                422, "Unprocessable Entity", "The database refused a value of this request."
            )
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
