"""The audit log: every write through the API leaves one entry, in the write's transaction.

One mechanism, no per-endpoint code. :func:`app.auth.require_role` opens an
:class:`AuditScope` for every POST, PUT, PATCH and DELETE once the caller is known: the
actor, and an action and resource derived from the route (``/workflows/<workflow_id>``,
PATCH → ``workflow.updated``; ``…/runs/<run_id>/cancel`` → ``run.cancelled``). The auth
layer hands over the request's facts (:class:`RequestFacts`); this module never reads
Flask's ``request`` or ``g``. The scope lives in the request session's ``info``, and
SQLAlchemy session events on that session do the rest:

- ``do_orm_execute`` and ``before_flush`` notice the request's writes (ORM objects and
  ``insert``/``update``/``delete`` statements alike) and the ids of resources it creates;
  writes to bookkeeping tables (idempotency records, job logs, trigger events) do not count;
- ``before_commit`` adds the entry to the first transaction that commits a write, so the
  entry and the write commit or roll back together; later commits of the same request
  (a cancel that then finalizes the run) add nothing;
- a request that fails before writing (any 4xx) commits no write, so it leaves no entry.

A successful write request that touched no table (testing a credential) is recorded by the
API's ``after_request`` hook (:func:`record_unwritten`) in a transaction of its own — except
a replay of an ``Idempotency-Key`` request, which did nothing. Views may refine the entry with
:func:`annotate` (a bulk decision's count); code outside a request may call :func:`record`.
``details`` holds names, counts and ids, never a request's values, so never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import TextClause
from sqlmodel import Session, SQLModel

from app.ids import now_ms
from app.models import (
    ApiKey,
    Approval,
    AuditEntry,
    Credential,
    Entity,
    EntityType,
    Job,
    KvEntry,
    Run,
    Trigger,
    Workflow,
    table_of,
)

if TYPE_CHECKING:
    from app.keys import Caller

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writes to these tables are bookkeeping, not what the client asked for.
BOOKKEEPING_TABLES = frozenset({"idempotency_records", "job_logs", "trigger_events"})
# POSTs that store nothing: validate a document, generate an unsaved workflow draft.
READ_ONLY_SEGMENTS = frozenset({"validate", "generate"})
# Where a request's session keeps its audit scope and its caller.
SCOPE_KEY = "audit_scope"
ACTOR_KEY = "audit_actor"


@dataclass(frozen=True)
class Resource:
    """What a blueprint's routes act on."""

    name: str
    model: type[SQLModel] | None
    id_arg: str | None
    action_prefix: str | None = None


# Blueprint name → resource. Blueprints not listed act on their singular noun.
RESOURCES = {
    "api_keys": Resource("api_key", ApiKey, "key_id"),
    "entity_types": Resource("entity_type", EntityType, "type_id"),
    "entities": Resource("entity", Entity, "entity_id"),
    "workflows": Resource("workflow", Workflow, "workflow_id"),
    "revisions": Resource("workflow", Workflow, "workflow_id"),
    "runs": Resource("run", Run, "run_id"),
    "jobs": Resource("job", Job, "job_id"),
    "credentials": Resource("credential", Credential, "credential_id"),
    "triggers": Resource("trigger", Trigger, "trigger_id"),
    "webhooks": Resource("trigger", Trigger, "trigger_id", action_prefix="webhook"),
    "approvals": Resource("approval", Approval, "approval_id"),
    "kv": Resource("kv_entry", KvEntry, None),
}
METHOD_VERBS = {"POST": "created", "PUT": "updated", "PATCH": "updated", "DELETE": "deleted"}
# A route's last literal segment names the verb: ``…/runs/<run_id>/cancel`` → cancelled.
SEGMENT_VERBS = {
    "run": "started",
    "cancel": "cancelled",
    "retry": "retried",
    "test": "tested",
    "bulk": "bulk_created",
    "approve": "approved",
    "reject": "rejected",
    "decide": "decided",
    "duplicate": "duplicated",
    "restore": "restored",
    "import": "imported",
}
VERB_OVERRIDES = {
    ("webhooks", "POST"): "fired",
    ("api_keys", "DELETE"): "revoked",
    ("kv", "PUT"): "set",
}


@dataclass
class AuditScope:
    """The entry one write request will leave, filled in as the request goes."""

    session: Session | None
    actor: Caller
    action: str
    resource_type: str
    resource_id: str | None
    details: dict[str, Any]
    model: type[SQLModel] | None = None
    created: list[str] = field(default_factory=list)
    created_count: int = 0
    wrote: bool = False  # the open transaction holds a write of the request
    pending: bool = False  # the entry was added to the open transaction
    recorded: bool = False  # the entry is committed


def camelcase(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _resource(blueprint: str) -> Resource:
    found = RESOURCES.get(blueprint)
    if found is not None:
        return found
    return Resource(blueprint.removesuffix("s"), None, None)


@dataclass(frozen=True)
class RequestFacts:
    """What the audit needs to know of a request, handed over by the API layer."""

    method: str
    rule: str | None  # the matched URL rule (``/api/v1/workflows/<workflow_id>``)
    blueprint: str
    view_args: dict[str, Any]
    query: dict[str, str]  # the query string (first value of each name)
    body_keys: frozenset[str]  # the JSON body's top-level names (never its values)


def describe_request(caller: Caller, facts: RequestFacts) -> AuditScope | None:
    """The scope of a request, or None when it is not a write."""
    if facts.method not in WRITE_METHODS or facts.rule is None:
        return None
    segments = [s for s in facts.rule.split("/") if s]
    last = segments[-1] if segments else ""
    if last in READ_ONLY_SEGMENTS:
        return None
    blueprint = facts.blueprint
    resource = _resource(blueprint)
    verb = VERB_OVERRIDES.get((blueprint, facts.method))
    if verb is None:
        verb = SEGMENT_VERBS.get(last) if not last.startswith("<") else None
    if verb is None:
        verb = METHOD_VERBS[facts.method]
    if blueprint == "credentials" and facts.method == "PUT" and facts.body_keys & {"data"}:
        verb = "rotated"  # new secret data: the credential's secret was rotated
    view_args = dict(facts.view_args)
    resource_id = view_args.pop(resource.id_arg, None) if resource.id_arg else None
    details: dict[str, Any] = {camelcase(k): str(v) for k, v in view_args.items()}
    if facts.method in ("PUT", "PATCH") and blueprint != "kv":
        details["fields"] = sorted(facts.body_keys)
    if facts.method == "DELETE" and facts.query:
        details["query"] = {k: v for k, v in facts.query.items() if k != "cursor"}
    return AuditScope(
        session=None,
        actor=caller,
        action=f"{resource.action_prefix or resource.name}.{verb}",
        resource_type=resource.name,
        resource_id=None if resource_id is None else str(resource_id),
        details=details,
        model=resource.model,
    )


def begin_request(session: Session, caller: Caller, facts: RequestFacts) -> None:
    """Open the audit scope of a request on its ``session`` (called by the auth layer)."""
    session.info.setdefault(ACTOR_KEY, caller)
    if SCOPE_KEY not in session.info:
        session.info[SCOPE_KEY] = describe_request(caller, facts)


def open_scope(session: Session, scope: AuditScope) -> None:
    """Give ``session`` a scope built by the caller (a console write mirrors its API twin)."""
    session.info[ACTOR_KEY] = scope.actor
    session.info[SCOPE_KEY] = scope


def current_scope(session: Session | OrmSession) -> AuditScope | None:
    """The scope of the request ``session`` serves, if it is a write."""
    scope: AuditScope | None = session.info.get(SCOPE_KEY)
    return scope


def annotate(
    session: Session,
    *,
    action: str | None = None,
    resource_id: str | None = None,
    **details: Any,
) -> None:
    """Refine the entry of the request ``session`` serves (no-op outside a write request)."""
    scope = current_scope(session)
    if scope is None:
        return
    if action is not None:
        scope.action = action
    if resource_id is not None:
        scope.resource_id = resource_id
    scope.details.update(details)


def record(
    session: Session,
    *,
    action: str,
    resource_type: str,
    resource_id: str | None,
    details: dict[str, Any] | None = None,
    workspace_id: str | None = None,
    actor: Caller | None = None,
) -> AuditEntry:
    """Add one entry to ``session``'s transaction; the actor is the request's caller."""
    if actor is None:
        actor = session.info.get(ACTOR_KEY)
    ws = workspace_id or (actor.workspace_id if actor is not None else None)
    if ws is None:
        raise ValueError("an audit entry needs a workspace")
    entry = AuditEntry(
        workspace_id=ws,
        at=now_ms(),
        actor_key_id=actor.key_id if actor else None,
        actor_key_prefix=actor.key_prefix if actor else None,
        actor_role=actor.role if actor else None,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        details=details or {},
    )
    session.add(entry)
    return entry


def _entry_of(session: Session, scope: AuditScope) -> None:
    details = dict(scope.details)
    resource_id = scope.resource_id
    if scope.created:
        if resource_id is None:
            resource_id = scope.created[0]
        elif scope.created[0] != resource_id:
            details.setdefault("createdId", scope.created[0])
    if scope.created_count > 1:
        details.setdefault("count", scope.created_count)
    record(
        session,
        action=scope.action,
        resource_type=scope.resource_type,
        resource_id=resource_id,
        details=details,
        actor=scope.actor,
    )


def _scope_of(session: OrmSession) -> AuditScope | None:
    """The open scope of the request ``session`` serves."""
    scope = current_scope(session)
    if scope is None or scope.recorded:
        return None
    return scope


def _table_name(statement: Any) -> str | None:
    table = getattr(statement, "table", None)
    return getattr(table, "name", None)


@event.listens_for(OrmSession, "do_orm_execute")
def _notice_statement(state: Any) -> None:
    """An ``insert``/``update``/``delete`` statement (or raw DML) is a write of the request."""
    scope = _scope_of(state.session)
    if scope is None:
        return
    statement = state.statement
    if isinstance(statement, UpdateBase):
        name = _table_name(statement)
        if name in BOOKKEEPING_TABLES or name == "audit_entries":
            return
        scope.wrote = True
        if state.is_insert and scope.model is not None and name == table_of(scope.model).name:
            params = state.parameters
            rows = params if isinstance(params, list) else [params] if params else []
            scope.created.extend(str(r["id"]) for r in rows if isinstance(r, dict) and "id" in r)
            scope.created_count += len(rows)
    elif isinstance(statement, TextClause) and statement.text.lstrip()[:6].upper() in (
        "INSERT",
        "UPDATE",
        "DELETE",
    ):
        scope.wrote = True


@event.listens_for(OrmSession, "before_flush")
def _notice_objects(session: OrmSession, _context: Any, _instances: Any) -> None:
    """New, changed or deleted ORM objects are writes of the request."""
    scope = _scope_of(session)
    if scope is None:
        return
    for obj in (*session.new, *session.dirty, *session.deleted):
        name = table_of(type(obj)).name
        if name in BOOKKEEPING_TABLES or name == "audit_entries":
            continue
        if obj in session.dirty and not session.is_modified(obj):
            continue
        scope.wrote = True
        if obj in session.new and scope.model is not None and isinstance(obj, scope.model):
            scope.created.append(str(getattr(obj, "id", "")))
            scope.created_count += 1


@event.listens_for(OrmSession, "before_commit")
def _add_entry(session: OrmSession) -> None:
    """Put the request's entry into the first transaction that commits one of its writes."""
    scope = _scope_of(session)
    if scope is None or scope.pending:
        return
    session.flush()  # so before_flush sees every pending object
    if scope.wrote:
        assert isinstance(session, Session)
        _entry_of(session, scope)
        scope.pending = True


@event.listens_for(OrmSession, "after_commit")
def _entry_committed(session: OrmSession) -> None:
    scope = _scope_of(session)
    if scope is not None and scope.pending:
        scope.recorded = True


@event.listens_for(OrmSession, "after_rollback")
def _writes_undone(session: OrmSession) -> None:
    """A rolled-back transaction took its writes, and any entry, with it."""
    scope = _scope_of(session)
    if scope is not None:
        scope.wrote = scope.pending = False
        scope.created.clear()
        scope.created_count = 0


def record_unwritten(session: Session) -> None:
    """After a successful write request (not an ``Idempotency-Key`` replay): one that touched
    no table still leaves its entry, in a transaction of its own."""
    scope = current_scope(session)
    if scope is None or scope.recorded:
        return
    session.rollback()  # end whatever read transaction the request left open
    _entry_of(session, scope)
    scope.pending = True
    session.commit()
