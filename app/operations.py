"""Operational endpoints outside the API: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
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
        from jobs.queue import redis_connection

        redis_connection(settings.redis_url).ping()
    except Exception as exc:  # any client error means "not ready"
        return f"redis: {type(exc).__name__}"
    return None


@blp.get("/readyz")
def readyz() -> Any:
    """The database and Redis answer; 503 with ``Retry-After`` when one does not."""
    problems = [p for p in (_check_database(), _check_redis()) if p]
    if problems:
        response = jsonify(
            {
                "code": 503,
                "status": "Service Unavailable",
                "message": "A backing service is not reachable: " + ", ".join(problems),
                "errors": {"services": problems},
            }
        )
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return response
    return jsonify({"status": "ready"})


def init_app(app: Flask) -> None:
    """Register the operational endpoints."""
    app.register_blueprint(blp)
