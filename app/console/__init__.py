"""The console: server-rendered pages over the same services as the API, at ``/console``.

Jinja templates and one small hand-written script (``static/console.js``): no Node
toolchain, no CDN. Swagger UI's assets come from the ``flask-swagger-ui`` package and are
served here too, so ``/api/v1/docs`` works without internet.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, redirect, send_from_directory, url_for
from werkzeug.wrappers import Response

SWAGGER_UI_PATH = "/console/swagger-ui/"


def swagger_ui_dir() -> Path:
    """Where the installed ``flask-swagger-ui`` package keeps swagger-ui-dist's files."""
    import flask_swagger_ui

    return Path(flask_swagger_ui.__file__).parent / "dist"


def init_app(app: Flask) -> None:
    """Register the console blueprint, its session store and Swagger UI's assets."""
    import importlib

    from app.console import auth
    from app.console.blueprint import bp
    from app.console.views import VIEW_MODULES

    for name in VIEW_MODULES:  # each module adds its routes to the one blueprint
        importlib.import_module(f"app.console.views.{name}")
    auth.init_store(app)
    app.register_blueprint(bp)

    @app.get(SWAGGER_UI_PATH + "<path:filename>")
    def swagger_ui_asset(filename: str) -> Response:
        """swagger-ui-dist's files, from the installed package (no CDN)."""
        return send_from_directory(swagger_ui_dir(), filename, max_age=86400)

    @app.get("/")
    def home() -> Response:
        """The root sends people to the console."""
        return redirect(url_for("console.workflows"))  # type: ignore[return-value]
