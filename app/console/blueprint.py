"""The console's blueprint: its session and CSRF hooks, security headers, error pages,
template helpers, and the small helpers every console view uses."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from app.console import auth, formatting
from app.errors import ConveyorError

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# No inline scripts or styles anywhere in the console: a strict policy costs nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


bp.before_request(auth.load_session)
bp.before_request(auth.check_csrf)
bp.add_app_template_global(auth.csrf_token, "csrf_token")
bp.add_app_template_global(auth.take_notices, "take_notices")
for _name, _function in formatting.FILTERS.items():
    bp.add_app_template_filter(_function, _name)


@bp.after_request
def _finish(response: Response) -> Response:
    """Session cookie, and headers that keep console pages private and un-framed."""
    auth.set_cookie(response)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "console.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _error_page(code: int, message: str) -> tuple[str, int]:
    return render_template("console/error.html", code=code, message=message), code


@bp.errorhandler(ConveyorError)
def _conveyor_error(error: ConveyorError) -> tuple[str, int]:
    return _error_page(error.code, error.message)


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> tuple[str, int]:
    """Refusals and unknown pages inside the console are pages, never JSON bodies."""
    return _error_page(error.code or 500, error.description or error.name)


def caller() -> auth.Caller:
    """The signed-in key (views are behind ``auth.require``)."""
    caller = auth.signed_in_caller()
    assert caller is not None  # views are behind auth.require
    return caller


def notice(message: str, kind: str = "ok") -> None:
    """A one-time message shown on the next page (kept in the server-side session)."""
    session = auth.ensure_session()
    session.notices.append([kind, message])
    auth.save_session()


def safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return url_for("console.workflows")


@bp.route("/<path:unknown>")
def not_found(unknown: str) -> Any:
    """Any other console path: a page, not the API's JSON 404."""
    abort(404, description=f"There is no console page at /console/{unknown}.")


@bp.app_template_global()
def current_key() -> Any:
    """The signed-in key (for the header), or None."""
    return g.get("caller")
