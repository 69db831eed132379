"""Console pages. Each view reads through ``app/console/queries.py`` or ``app/services`` and
writes only through ``app/services``: the same functions, and the same role per action,
as the API (viewer reads; executor runs, cancels, retries; editor manages credentials;
admin manages keys)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from app.api.runs import progress_of
from app.auth import ROLES
from app.console import auth, formatting, queries
from app.db import db_session
from app.errors import ConveyorError
from app.models import ApiKey, Approval, Credential, Run, Workflow
from app.queue import get_queue
from app.schemas.credentials import CREDENTIAL_TYPES, CredentialSchema
from app.schemas.runs import ITEM_STATUSES
from app.services import credentials as credentials_service
from app.services import entities as entities_service
from app.services import runs as runs_service
from app.services import triggers as triggers_service
from app.services import workflows as workflows_service
from app.services import workspaces as workspaces_service
from steps.clients.outbound import OutboundPolicy

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
TERMINAL = runs_service.TERMINAL


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


def _caller() -> auth.Caller:
    caller = auth.signed_in_caller()
    assert caller is not None  # views are behind auth.require
    return caller


def _notice(message: str, kind: str = "ok") -> None:
    """A one-time message shown on the next page (kept in the server-side session)."""
    session = auth.ensure_session()
    session.notices.append([kind, message])
    auth.save_session()


# --- sign in / out -----------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an open redirect."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return url_for("console.workflows")


@bp.route("/sign-in", methods=["GET", "POST"])
def sign_in() -> Any:
    """Sign in with an API key."""
    error = None
    if request.method == "POST":
        row = auth.find_key(request.form.get("api_key", ""))
        if row is not None:
            auth.sign_in(row)
            return redirect(_safe_next(request.form.get("next")))
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
    return redirect(url_for("console.workflows"))


# --- workflows ---------------------------------------------------------------------------


@bp.route("/workflows")
@auth.require("viewer")
def workflows() -> Any:
    """Every workflow with its newest run at a glance."""
    rows = queries.workflows_with_last_run(db_session(), _caller().workspace_id)
    return render_template("console/workflows.html", rows=rows)


@bp.route("/workflows/<workflow_id>")
@auth.require("viewer")
def workflow(workflow_id: str) -> Any:
    """A workflow's steps, settings, triggers and recent runs."""
    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=_caller().workspace_id, workflow_id=workflow_id
    )
    return render_template(
        "console/workflow.html",
        workflow=row,
        entity_type=_entity_type_name(row),
        triggers=queries.workflow_triggers(session, row.id),
        runs=queries.recent_runs(session, row.id),
    )


def _entity_type_name(workflow: Workflow) -> str:
    try:
        return entities_service.get_entity_type(
            session=db_session(),
            workspace_id=workflow.workspace_id,
            type_id=workflow.entity_type_id,
        ).name
    except ConveyorError:
        return workflow.entity_type_id


def _selection(form: Any) -> tuple[list[str] | None, dict[str, Any] | None]:
    """The run form's selection as ``start_run`` takes it: entity ids, or a selector."""
    mode = form.get("selection", "all")
    if mode == "ids":
        ids = [part for part in form.get("ids", "").replace(",", " ").split() if part]
        if not ids:
            raise ConveyorError("List at least one entity id, or choose another selection.")
        return ids, None
    if mode == "status":
        status = form.get("status", "").strip()
        if not status:
            raise ConveyorError("Type the status of the entities to run.")
        return None, {"status": status}
    return None, {}


def _sample(raw: str) -> int | None:
    """The form's optional sample size (a dry run over N entities of the selection)."""
    raw = raw.strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise ConveyorError("Sample must be a whole number from 1 to 100000.")
    return int(raw)


@bp.route("/workflows/<workflow_id>/run", methods=["GET", "POST"])
@auth.require("executor", audit=("run.started", Run, None))
def run_workflow(workflow_id: str) -> Any:
    """The run form; Start run starts it through the runs service and shows the run."""
    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=_caller().workspace_id, workflow_id=workflow_id
    )
    error = None
    if request.method == "POST":
        try:
            entity_ids, selector = _selection(request.form)
            raw_input = request.form.get("input", "").strip()
            try:
                run_input = json.loads(raw_input) if raw_input else None
            except ValueError as exc:
                raise ConveyorError(f"Input is not valid JSON: {exc}") from exc
            run = runs_service.start_run(
                session=session,
                queue=get_queue(),
                workflow=row,
                entity_ids=entity_ids,
                selector=selector,
                input=run_input,
                dry_run=request.form.get("mode") == "dry",
                sample=_sample(request.form.get("sample", "")),
            )
            return redirect(url_for("console.run", run_id=run.id))
        except ConveyorError as exc:
            session.rollback()
            error = exc.message
            if exc.errors and exc.errors.get("entityIds"):
                error += " " + ", ".join(exc.errors["entityIds"][:20])
    page = render_template(
        "console/run_form.html",
        workflow=row,
        error=error,
        form=request.form,
        entity_type=_entity_type_name(row),
    )
    return page, (422 if error else 200)


# --- runs --------------------------------------------------------------------------------


def _run(run_id: str) -> Run:
    return runs_service.get_run(
        session=db_session(), workspace_id=_caller().workspace_id, run_id=run_id
    )


def live_state(run: Run) -> dict[str, Any]:
    """What the run page shows live: progress, rate, ETA, failure reasons, retries."""
    session = db_session()
    progress = progress_of(run)
    progress["awaitingApproval"] = progress.pop("awaiting_approval", 0)
    finished = progress["completed"] + progress["failed"] + progress["cancelled"]
    now = int(time.time() * 1000)
    rate = eta = None
    if run.started_at and finished:
        elapsed = max(((run.completed_at or now) - run.started_at) / 1000, 0.001)
        rate = finished / elapsed
        if run.status not in TERMINAL and rate > 0:
            eta = progress["pending"] / rate
    reasons = [
        {
            "message": message,
            "count": count,
            "url": url_for("console.run", run_id=run.id, status="failed", error=message) + "#items",
        }
        for message, count in queries.failure_reasons(session, run.id)
    ]
    retries = [
        {"id": r.id, "status": r.status, "url": url_for("console.run", run_id=r.id)}
        for r in queries.retries_of(session, run.id)
    ]
    return {
        "id": run.id,
        "status": run.status,
        "terminal": run.status in TERMINAL,
        "progress": progress,
        "finished": finished,
        "rate": rate,
        "etaSeconds": eta,
        "dryRun": run.dry_run,
        "reasons": reasons,
        "retries": retries,
        "error": run.error,
        "startedAt": formatting.when(run.started_at),
        "completedAt": formatting.when(run.completed_at),
    }


def _etag(run: Run) -> str:
    """Changes whenever the live state does: counts, status, waiting entities, retries."""
    retries = len(queries.retries_of(db_session(), run.id))
    awaiting = progress_of(run)["awaiting_approval"]
    counts = f"{run.completed}.{run.failed}.{run.cancelled}.{run.total}.{awaiting}"
    return f'"{run.status}.{counts}.{retries}"'


def _items_args() -> dict[str, Any]:
    status = request.args.get("status") or None
    if status not in (None, *ITEM_STATUSES):
        abort(400, description=f"Unknown item status {status!r}.")
    after = request.args.get("after")
    if after is not None and not after.isdigit():
        abort(400, description="Not a valid page cursor.")
    return {
        "status": status,
        "error": request.args.get("error") or None,
        "after": int(after) if after else None,
    }


@bp.route("/runs/<run_id>")
@auth.require("viewer")
def run(run_id: str) -> Any:
    """The run page: live progress, failure reasons, items, cancel and retry."""
    session = db_session()
    row = _run(run_id)
    args = _items_args()
    workflow_row = session.get(Workflow, row.workflow_id)
    return render_template(
        "console/run.html",
        run=row,
        workflow=workflow_row,
        state=live_state(row),
        items=queries.run_items(session, row.id, **args),
        filters=args,
        statuses=ITEM_STATUSES,
        step_names={s["id"]: s.get("name") or s["id"] for s in row.steps or []},
    )


@bp.route("/runs/<run_id>/live")
@auth.require("viewer")
def run_live(run_id: str) -> Any:
    """The run's live state as JSON, with an ETag so an unchanged run costs a 304."""
    row = _run(run_id)
    etag = _etag(row)
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if row.status not in TERMINAL:
        headers["Retry-After"] = "1"
    if request.headers.get("If-None-Match") == etag:
        return Response(status=304, headers=headers)
    response = jsonify(live_state(row))
    response.headers.update(headers)
    return response


@bp.route("/runs/<run_id>/items")
@auth.require("viewer")
def run_items(run_id: str) -> Any:
    """The items table body as an HTML fragment, for the live page to swap in."""
    row = _run(run_id)
    args = _items_args()
    return render_template(
        "console/_items.html",
        run=row,
        items=queries.run_items(db_session(), row.id, **args),
        filters=args,
        step_names={s["id"]: s.get("name") or s["id"] for s in row.steps or []},
    )


@bp.route("/runs/<run_id>/cancel", methods=["POST"])
@auth.require("executor", audit=("run.cancelled", Run, "run_id"))
def cancel_run(run_id: str) -> Any:
    """Cancel through the runs service."""
    row = runs_service.cancel_run(session=db_session(), run=_run(run_id))
    _notice(f"Run cancelled: {row.cancelled} entities will not run.")
    return redirect(url_for("console.run", run_id=row.id))


@bp.route("/runs/<run_id>/retry", methods=["POST"])
@auth.require("executor", audit=("run.retried", Run, "run_id"))
def retry_run(run_id: str) -> Any:
    """Retry the failed and cancelled entities as a new, linked run."""
    new = runs_service.retry_run(session=db_session(), queue=get_queue(), run=_run(run_id))
    _notice(f"Retrying {new.total} entities of run {run_id}.")
    return redirect(url_for("console.run", run_id=new.id))


# --- entities ----------------------------------------------------------------------------


def _parse_date(value: str | None) -> int | None:
    """``2026-11-29`` or ``2026-11-29T10:30`` (UTC) → epoch ms."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        abort(400, description=f"Not a date: {value!r}.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@bp.route("/entities")
@auth.require("viewer")
def entities() -> Any:
    """Browse entities by type, status and update time, a cursor page at a time."""
    session = db_session()
    workspace_id = _caller().workspace_id
    page = queries.entities(
        session,
        workspace_id,
        entity_type_id=request.args.get("type") or None,
        status=request.args.get("status") or None,
        updated_since=_parse_date(request.args.get("updated_since")),
        after=request.args.get("after") or None,
    )
    types = queries.entity_types(session, workspace_id)
    return render_template(
        "console/entities.html",
        page=page,
        types=types,
        type_names={t.id: t.name for t in types},
        args=request.args,
    )


@bp.route("/entities/<entity_id>")
@auth.require("viewer")
def entity(entity_id: str) -> Any:
    """An entity's data and the runs that touched it."""
    session = db_session()
    row = entities_service.get_entity(
        session=session, workspace_id=_caller().workspace_id, entity_id=entity_id
    )
    entity_type = entities_service.get_entity_type(
        session=session, workspace_id=row.workspace_id, type_id=row.entity_type_id
    )
    return render_template(
        "console/entity.html",
        entity=row,
        entity_type=entity_type,
        runs=queries.entity_runs(session, row.id),
        workflow_names=queries.workflow_names(session, row.workspace_id),
    )


# --- triggers ----------------------------------------------------------------------------


@bp.route("/triggers")
@auth.require("viewer")
def triggers() -> Any:
    """Every trigger with its next fire time."""
    session = db_session()
    workspace_id = _caller().workspace_id
    return render_template(
        "console/triggers.html",
        triggers=queries.triggers(session, workspace_id),
        workflow_names=queries.workflow_names(session, workspace_id),
    )


@bp.route("/triggers/<trigger_id>")
@auth.require("viewer")
def trigger(trigger_id: str) -> Any:
    """A trigger and its events: fires, queued fires and skips with their reasons."""
    session = db_session()
    row = triggers_service.get_trigger(
        session=session, workspace_id=_caller().workspace_id, trigger_id=trigger_id
    )
    return render_template(
        "console/trigger.html",
        trigger=row,
        events=queries.trigger_events(session, row.id),
        workflow_names=queries.workflow_names(session, row.workspace_id),
    )


# --- credentials -------------------------------------------------------------------------


def _json_field(name: str, label: str) -> Any:
    raw = request.form.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ConveyorError(f"{label} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConveyorError(f"{label} must be a JSON object.")
    return value


def _credentials_page(error: str | None = None, status: int = 200) -> Any:
    rows = credentials_service.list_credentials(
        session=db_session(), workspace_id=_caller().workspace_id
    )
    form = {k: v for k, v in request.form.items() if k in ("name", "type", "settings")}
    page = render_template(
        "console/credentials.html",
        credentials=rows,
        types=CREDENTIAL_TYPES,
        error=error,
        form=form,
    )
    return page, status


@bp.route("/credentials")
@auth.require("viewer")
def credentials() -> Any:
    """The workspace's credentials (never their secrets)."""
    return _credentials_page()


@bp.route("/credentials", methods=["POST"])
@auth.require("editor", audit=("credential.created", Credential, None))
def create_credential() -> Any:
    """Create a credential from the form, loaded with the API's own schema."""
    session = db_session()
    try:
        payload = {
            "name": request.form.get("name", ""),
            "type": request.form.get("type", ""),
            "data": _json_field("data", "Secret data"),
            "settings": _json_field("settings", "Settings"),
        }
        try:
            data = CredentialSchema().load(payload)
        except ma.ValidationError as exc:
            from app.errors import flatten_errors

            errors = flatten_errors(exc.messages)
            raise ConveyorError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
            ) from exc
        row = credentials_service.create_credential(
            session=session,
            workspace_id=_caller().workspace_id,
            data=data,
            box=credentials_service.secret_box(current_app.config["CONVEYOR"]),
        )
    except ConveyorError as exc:
        session.rollback()
        # The secret is never sent back, not even to the page that failed to save it.
        return _credentials_page(exc.message, 422 if exc.code < 500 else exc.code)
    _notice(f"Credential {row.name!r} created.")
    return redirect(url_for("console.credentials"))


@bp.route("/credentials/<credential_id>/test", methods=["POST"])
@auth.require("editor", audit=("credential.tested", Credential, "credential_id"))
def test_credential(credential_id: str) -> Any:
    """Use the credential once for real, like the API's test."""
    settings = current_app.config["CONVEYOR"]
    session = db_session()
    result = credentials_service.check_credential(
        session=session,
        workspace_id=_caller().workspace_id,
        credential_id=credential_id,
        box=credentials_service.secret_box(settings),
        policy=OutboundPolicy(settings.outbound_allow_hosts),
        url=request.form.get("url") or None,
    )
    row = credentials_service.get_credential(
        session=session, workspace_id=_caller().workspace_id, credential_id=credential_id
    )
    verdict = "works" if result["ok"] else "failed"
    _notice(
        f"Credential {row.name!r} {verdict}: {result['message']} ({result['duration_ms']} ms)",
        "ok" if result["ok"] else "error",
    )
    return redirect(url_for("console.credentials"))


@bp.route("/credentials/<credential_id>/delete", methods=["POST"])
@auth.require("editor", audit=("credential.deleted", Credential, "credential_id"))
def delete_credential(credential_id: str) -> Any:
    """Delete a credential."""
    credentials_service.delete_credential(
        session=db_session(), workspace_id=_caller().workspace_id, credential_id=credential_id
    )
    _notice("Credential deleted.")
    return redirect(url_for("console.credentials"))


# --- approvals ---------------------------------------------------------------------------


APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")


@bp.route("/approvals")
@auth.require("viewer")
def approvals() -> Any:
    """Entities waiting at review gates, with their preview; decide many at once."""
    session = db_session()
    workspace_id = _caller().workspace_id
    status = request.args.get("status") or "pending"
    if status not in APPROVAL_STATUSES:
        abort(400, description=f"Unknown approval status {status!r}.")
    page = queries.approvals(
        session,
        workspace_id,
        run_id=request.args.get("run") or None,
        workflow_id=request.args.get("workflow") or None,
        status=status,
        after=request.args.get("after") or None,
    )
    return render_template(
        "console/approvals.html",
        page=page,
        approval_status=status,
        statuses=APPROVAL_STATUSES,
        args=request.args,
        workflow_names=queries.workflow_names(session, workspace_id),
    )


@bp.route("/approvals/decide", methods=["POST"])
@auth.require("executor", audit=("approval.decided", Approval, None))
def decide_approvals() -> Any:
    """Approve or reject the selected approvals through the approvals service."""
    from app.services import approvals as approvals_service

    decision = request.form.get("decision")
    ids = request.form.getlist("ids")
    back = _safe_next(request.form.get("next"))
    if decision not in ("approve", "reject"):
        abort(400, description="Choose Approve selected or Reject selected.")
    if not ids:
        _notice("Select at least one entity first.", "error")
        return redirect(back)
    decided = approvals_service.decide_approvals(
        session=db_session(),
        queue=get_queue(),
        workspace_id=_caller().workspace_id,
        decision=decision,
        ids=ids,
        comment=request.form.get("comment") or None,
        decided_by=_caller().key_id,
    )
    verb = "Approved" if decision == "approve" else "Rejected"
    skipped = len(set(ids)) - decided
    _notice(f"{verb} {decided}." + (f" {skipped} were already decided." if skipped else ""))
    return redirect(back)


# --- revisions ---------------------------------------------------------------------------


@bp.route("/workflows/<workflow_id>/revisions")
@auth.require("viewer")
def revisions(workflow_id: str) -> Any:
    """Every saved version of a workflow, one version's diff, and Restore."""
    from app.services import revisions as revisions_service

    session = db_session()
    row = workflows_service.get_workflow(
        session=session, workspace_id=_caller().workspace_id, workflow_id=workflow_id
    )
    versions = queries.revisions(session, row.id)
    shown = request.args.get("version", type=int) or row.version
    against = request.args.get("against", type=int)
    target = revisions_service.get_revision(session=session, workflow_id=row.id, version=shown)
    base = shown - 1 if against is None else against
    source = None
    if base >= 1:
        source = revisions_service.get_revision(session=session, workflow_id=row.id, version=base)
    return render_template(
        "console/revisions.html",
        workflow=row,
        revisions=versions,
        shown=shown,
        base=base,
        patch=queries.revision_patch(source, target),
    )


@bp.route("/workflows/<workflow_id>/revisions/<int:version>/restore", methods=["POST"])
@auth.require("editor", audit=("workflow.restored", Workflow, "workflow_id"))
def restore_revision(workflow_id: str, version: int) -> Any:
    """Put an earlier version back, as a new version."""
    from app.services.workflows import Actor, restore_workflow

    caller = _caller()
    row = restore_workflow(
        session=db_session(),
        workspace_id=caller.workspace_id,
        workflow_id=workflow_id,
        version=version,
        actor=Actor(key_id=caller.key_id, key_prefix=caller.key_prefix),
    )
    _notice(f"Restored version {version} as version {row.version}.")
    return redirect(url_for("console.revisions", workflow_id=row.id))


# --- API keys ----------------------------------------------------------------------------


def _keys_page(new_key: str | None = None, error: str | None = None) -> Any:
    rows = workspaces_service.list_api_keys(
        session=db_session(), workspace_id=_caller().workspace_id
    )
    response = make_response(
        render_template(
            "console/api_keys.html", keys=rows, roles=ROLES, new_key=new_key, error=error
        ),
        422 if error else 200,
    )
    return response


@bp.route("/api-keys")
@auth.require("admin")
def api_keys() -> Any:
    """The workspace's keys (prefixes only)."""
    return _keys_page()


@bp.route("/api-keys", methods=["POST"])
@auth.require("admin", audit=("api_key.created", ApiKey, None))
def create_api_key() -> Any:
    """Create a key and show it on this response only."""
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    if not name or len(name) > 200 or role not in ROLES:
        return _keys_page(error="Give the key a name (up to 200 characters) and a role.")
    session = db_session()
    _, key = workspaces_service.create_api_key(
        session=session, workspace_id=_caller().workspace_id, name=name, role=role
    )
    session.commit()
    return _keys_page(new_key=key)


@bp.route("/api-keys/<key_id>/delete", methods=["POST"])
@auth.require("admin", audit=("api_key.revoked", ApiKey, "key_id"))
def delete_api_key(key_id: str) -> Any:
    """Revoke a key at once (its console sessions end on their next request)."""
    workspaces_service.delete_api_key(
        session=db_session(), workspace_id=_caller().workspace_id, key_id=key_id
    )
    _notice("API key revoked.")
    return redirect(url_for("console.api_keys"))


@bp.route("/<path:unknown>")
def not_found(unknown: str) -> Any:
    """Any other console path: a page, not the API's JSON 404."""
    abort(404, description=f"There is no console page at /console/{unknown}.")


@bp.app_template_global()
def current_key() -> Any:
    """The signed-in key (for the header), or None."""
    return g.get("caller")
