"""Workflows as portable documents: export, import and validate without saving.

A document is ``{apiVersion: "conveyor/v1", kind: "Workflow", name, description,
entityType: {name, schema}, steps, settings}`` in the API's camelCase form. It carries no ids
and no secrets (step configs name credentials). The entity type travels by name and schema:
an import uses the workspace's type of that name when its schema is the same, creates it when
there is none, and refuses (409) when one exists with a different schema. Export dumps the
stored workflow through the same schemas as ``GET``, so export → import → export gives the
same document. Validation runs the very checks a save runs (``check_workflow``).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from sqlmodel import Session, col, select

from app.errors import Conflict, ValidationFailed, flatten_errors
from app.ids import new_id
from app.models import EntityType, Workflow
from app.schemas.workflows import (
    DOCUMENT_API_VERSION,
    WorkflowDocumentSchema,
    WorkflowSchema,
)
from app.services.entities import check_json_schema, get_entity_type
from app.services.revisions import Actor
from app.services.workflows import (
    check_credential_names,
    check_steps,
    check_workflow,
    create_workflow,
)


def is_document(body: Any) -> bool:
    """True when ``body`` is a portable document rather than a ``POST /workflows`` body."""
    return isinstance(body, dict) and ("apiVersion" in body or "kind" in body)


def export_document(*, session: Session, workflow: Workflow) -> dict[str, Any]:
    """The workflow as a portable document (camelCase, in the document's key order)."""
    entity_type = get_entity_type(
        session=session, workspace_id=workflow.workspace_id, type_id=workflow.entity_type_id
    )
    return WorkflowDocumentSchema().dump(
        {
            "api_version": DOCUMENT_API_VERSION,
            "kind": "Workflow",
            "name": workflow.name,
            "description": workflow.description,
            "entity_type": {"name": entity_type.name, "schema_": entity_type.schema_},
            "steps": workflow.steps,
            "settings": workflow.settings,
        }
    )


def load_document(body: Any) -> dict[str, Any]:
    """A document's fields (snake_case), or 422 naming the failing paths."""
    try:
        return WorkflowDocumentSchema().load(body)
    except ma.ValidationError as exc:
        errors = flatten_errors(exc.messages)
        first = next(iter(errors))
        raise ValidationFailed(
            f"The document is not valid: {first}: {' '.join(errors[first])}", errors
        ) from exc


def _matching_entity_type(
    *, session: Session, workspace_id: str, ref: dict[str, Any]
) -> EntityType | None:
    """The workspace's entity type named ``ref['name']``: ``None`` when there is none,
    409 when every one of that name has another schema."""
    named = session.exec(
        select(EntityType)
        .where(col(EntityType.workspace_id) == workspace_id, col(EntityType.name) == ref["name"])
        .order_by(col(EntityType.created_at), col(EntityType.id))
    ).all()
    if not named:
        return None
    for row in named:
        if (row.schema_ or {"type": "object"}) == ref["schema_"]:
            return row
    raise Conflict(
        f"An entity type named {ref['name']!r} exists with a different schema; rename the "
        "document's entityType or align the schemas.",
        {"entityType.schema": ["Differs from the workspace's entity type of this name."]},
    )


def _check_new_type_schema(schema: dict[str, Any]) -> None:
    """422 unless the document's entity type schema is a JSON Schema (paths under entityType)."""
    try:
        check_json_schema(schema)
    except ValidationFailed as exc:
        errors = {f"entityType.{path}": msgs for path, msgs in (exc.errors or {}).items()}
        raise ValidationFailed(exc.message, errors) from exc


def import_document(
    *, session: Session, workspace_id: str, body: Any, actor: Actor | None = None
) -> Workflow:
    """Create a ``draft`` workflow from a document; its entity type matched by name.

    All or nothing: the entity type is created only together with the workflow.
    """
    document = load_document(body)
    check_steps(document["steps"])
    ref = document["entity_type"]
    entity_type = _matching_entity_type(session=session, workspace_id=workspace_id, ref=ref)
    if entity_type is None:
        _check_new_type_schema(ref["schema_"])
        entity_type = EntityType(
            id=new_id("et"), workspace_id=workspace_id, name=ref["name"], schema_=ref["schema_"]
        )
        session.add(entity_type)
        session.flush()
    data = {
        "name": document["name"],
        "description": document["description"],
        "status": "draft",
        "entity_type_id": entity_type.id,
        "steps": document["steps"],
        "settings": document["settings"],
    }
    return create_workflow(session=session, workspace_id=workspace_id, data=data, actor=actor)


def validation_errors(*, session: Session, workspace_id: str, body: Any) -> dict[str, list[str]]:
    """What saving ``body`` (a workflow body or a document) would refuse; ``{}`` when valid."""
    try:
        if is_document(body):
            document = load_document(body)
            ref = document["entity_type"]
            entity_type = _matching_entity_type(session=session, workspace_id=workspace_id, ref=ref)
            if entity_type is None:
                _check_new_type_schema(ref["schema_"])
            steps = check_steps(document["steps"])
            check_credential_names(
                session=session,
                workspace_id=workspace_id,
                steps=steps,
                settings=document["settings"],
            )
        else:
            data = WorkflowSchema().load(body)
            check_workflow(session=session, workspace_id=workspace_id, data=data)
    except ma.ValidationError as exc:
        return flatten_errors(exc.messages)
    except (ValidationFailed, Conflict) as exc:
        return dict(exc.errors or {"_schema": [exc.message]})
    return {}
