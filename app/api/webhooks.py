"""``/api/v1/webhooks/{triggerId}``: other systems start runs by posting JSON."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask.views import MethodView
from flask_smorest import abort
from werkzeug.exceptions import RequestEntityTooLarge

from app import jsonbody
from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.queue import get_queue
from app.schemas.triggers import WebhookFiredSchema
from app.services import triggers as service
from app.services.idempotency import idempotent

URL_PREFIX = "/webhooks"
MAX_BODY_BYTES = 1024 * 1024
blp = Blueprint("webhooks", __name__, description="Webhooks: fire a webhook trigger.")

_REQUEST_BODY = {
    "required": False,
    "description": "Any JSON (at most 1 MB); it becomes the run's `input`. In an object, "
    "`entityIds` selects the entities; without it the trigger's selector does.",
    "content": {
        "application/json": {
            "schema": {},
            "example": {"entityIds": ["ent_01JD8X0M5Q6W7E8R9T0Y1U2I3O"], "source": "cms"},
        }
    },
}


def _payload() -> Any:
    """The delivery's JSON body (``None`` when empty); 413 above 1 MB, 400 when malformed."""
    limit = MAX_BODY_BYTES
    if request.max_content_length is not None:
        limit = min(limit, request.max_content_length)
    request.max_content_length = limit  # a per-request limit (Flask 3.1)
    try:
        raw = request.get_data(cache=True)
    except RequestEntityTooLarge:
        abort(413, message=f"A webhook body is at most {limit:,} bytes.")
    if not raw.strip():
        return None
    try:
        return jsonbody.loads(raw)  # the app's strict loader: NaN, depth, NUL...
    except (ValueError, UnicodeDecodeError):
        abort(400, message="The body is not valid JSON.")


@blp.route("/<trigger_id>")
class Webhooks(MethodView):
    @require_role("executor")
    @blp.doc(requestBody=_REQUEST_BODY)
    @blp.response(202, WebhookFiredSchema)
    def post(self, trigger_id: str) -> Any:
        """Fire a webhook trigger: starts a run over entityIds or the trigger's selector"""
        caller = current_caller()
        session = db_session()
        trigger = service.webhook_trigger(
            session=session, workspace_id=caller.workspace_id, trigger_id=trigger_id
        )
        payload = _payload()
        queue = get_queue()

        def fire() -> tuple[Any, int]:
            body, _ = service.fire_webhook(
                session=session, queue=queue, trigger=trigger, payload=payload
            )
            return WebhookFiredSchema().dump(body), 202

        try:
            body, status, _ = idempotent(
                session=session,
                key=request.headers.get("Idempotency-Key"),
                workspace_id=caller.workspace_id,
                scope=f"webhook:{trigger_id}",
                body=payload,
                action=fire,
            )
        except service.TriggerInactive as refusal:
            session.rollback()
            service.record_refused_delivery(session=session, trigger_id=trigger_id, refusal=refusal)
            raise
        response = jsonify(body)
        response.status_code = status
        return response
