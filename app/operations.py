"""Operational endpoints outside the API: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from sqlalchemy import text

log = logging.getLogger(__name__)

blp = Blueprint("operations", __name__)


@blp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


def _check_database() -> str | None:
    """None when the database answers, else the reason."""
    try:
        with current_app.extensions["conveyor.engine"].connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not ready"
        return f"database: {type(exc).__name__}"
    return None


def _check_redis() -> str | None:
    """None when Redis answers (or is not configured), else the reason."""
    settings = current_app.config["CONVEYOR"]
    if not settings.redis_url:
        return None
    try:
        from app.queue import redis_connection

        redis_connection(settings.redis_url).ping()
    except Exception as exc:  # any client error means "not ready"
        return f"redis: {type(exc).__name__}"
    return None


def _check_schema() -> str | None:
    """None when the database schema is at the code's revision, else why not."""
    from app.migrate import SchemaCheck

    check: SchemaCheck = current_app.extensions["conveyor.schema_check"]
    try:
        return check.problem()
    except Exception as exc:  # unreachable: _check_database reports it
        return f"database: {type(exc).__name__}"


@blp.get("/readyz")
def readyz() -> Any:
    """The database answers and its schema is migrated, and Redis answers; else 503 with
    ``Retry-After``."""
    problems = [p for p in (_check_database(), _check_redis()) if p]
    if not problems and (schema := _check_schema()):
        problems.append(schema)
    if problems:
        response = jsonify(
            {
                "code": 503,
                "status": "Service Unavailable",
                "message": "Not ready: " + "; ".join(problems),
                "errors": {"services": problems},
            }
        )
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    return jsonify({"status": "ready"})


@blp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics: runs, entities, step durations, queue depth, provider calls.

    Unauthenticated like the health checks: it carries only counts summed over every
    workspace, step type names and provider names.
    """
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder
    from sqlmodel import Session

    from app.metrics import ConveyorCollector, store_for
    from app.queue import get_queue

    engine = current_app.extensions["conveyor.engine"]
    registry = CollectorRegistry()
    registry.register(
        ConveyorCollector(
            lambda: Session(engine),
            store_for(current_app.config["CONVEYOR"]),
            get_queue().depth,
        )
    )
    # The client library negotiates the format (Prometheus text or OpenMetrics) from Accept.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), content_type=content_type)


def init_app(app: Flask) -> None:
    """Register the operational endpoints."""
    app.register_blueprint(blp)
