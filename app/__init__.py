"""Conveyor's web application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask

from app.config import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(default_level: str = "INFO") -> None:
    """Log to stderr from ``default_level`` up (``CONVEYOR_LOG_LEVEL`` overrides it).

    Every process entry point calls this first: the web app, ``conveyor worker``,
    ``conveyor scheduler``, ``conveyor demo``. Safe to call more than once.
    """
    import os

    level = (os.environ.get("CONVEYOR_LOG_LEVEL") or default_level).upper()
    root = logging.getLogger()
    if not root.handlers:  # a host that installed its own handlers (pytest) keeps them
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app; ``test_config`` may carry a ``CONVEYOR`` Settings object."""
    app = Flask(__name__)
    settings: Settings = (test_config or {}).get("CONVEYOR") or Settings.from_env()
    app.config.update(
        CONVEYOR=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        API_TITLE="Conveyor",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Swagger UI from the installed flask-swagger-ui package, served by the console: no CDN.
        OPENAPI_SWAGGER_UI_URL="/console/swagger-ui/",
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k != "CONVEYOR"})
    app.json.sort_keys = False  # type: ignore[attr-defined]
    configure_logging()
    from app.redaction import install_log_redaction

    install_log_redaction()  # before anything can log a credential (e.g. httpx's request line)

    from app import api as api_module
    from app import console, db, migrate, operations, queue

    if settings.database_url.startswith("sqlite") and app.config.get("AUTO_MIGRATE", True):
        migrate.upgrade(settings.database_url)
    db.init_app(app)
    migrate.init_app(app)  # 503 "run `conveyor db upgrade`" until the schema is at head
    queue.init_app(app)
    api_module.init_app(app)
    operations.init_app(app)
    console.init_app(app)
    return app
