"""Signing in with an API key, and out."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for

from app.console import auth
from app.console.blueprint import bp, safe_next


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """Sign in with an API key."""
    error = None
    if request.method == "POST":
        row = auth.find_key(request.form.get("api_key", ""))
        if row is not None:
            auth.sign_in(row)
            return redirect(safe_next(request.form.get("next")))
        error = "That API key is not valid. Keys start with cvk_ and are shown once on creation."
    status = 401 if error else 200
    page = render_template("console/sign_in.html", error=error, next=request.values.get("next", ""))
    return page, status


@bp.route("/sign-out", methods=["POST"])
def sign_out() -> Any:
    """End the session."""
    auth.sign_out()
    return redirect(url_for("console.sign_in"))


@bp.route("/")
@auth.require("viewer")
def index() -> Any:
    """The console opens on the workflows."""
    return redirect(url_for("console.workflows"))
