"""``/api/v1/entities``: schema-checked entity data, bulk create, versioned updates."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import Entity, Run, RunItem
from app.pagination import PageArgs, keyset_page, page_headers
from app.schemas.entities import (
    EntityBulkSchema,
    EntityQueryArgsSchema,
    EntityRunSchema,
    EntitySchema,
    EntityUpdateSchema,
)
from app.services import entities as service
from app.services.idempotency import idempotent

URL_PREFIX = "/entities"
blp = Blueprint("entities", __name__, description="Entities: typed, versioned data.")

_dump = EntitySchema().dump


def _etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


@blp.route("")
class Entities(MethodView):
    @require_role("viewer")
    @blp.arguments(EntityQueryArgsSchema, location="query")
    @blp.response(200, EntitySchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List entities, filtered by entityTypeId, status, updatedSince or ids"""
        query = select(Entity).where(col(Entity.workspace_id) == current_caller().workspace_id)
        if "entity_type_id" in args:
            query = query.where(col(Entity.entity_type_id) == args["entity_type_id"])
        if "status" in args:
            query = query.where(col(Entity.status) == args["status"])
        if "updated_since" in args:
            query = query.where(col(Entity.updated_at) >= args["updated_since"])
        if args.get("ids"):
            query = query.where(col(Entity.id).in_(args["ids"]))
        rows = list(db_session().scalars(keyset_page(query, col(Entity.id), args)))
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(EntitySchema)
    @blp.response(201, EntitySchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create an entity (data is checked against its type's schema)"""
        session = db_session()
        row = service.create_entity(
            session=session, workspace_id=current_caller().workspace_id, data=data
        )
        session.commit()
        return row, _etag(1)


@blp.route("/bulk")
class EntitiesBulk(MethodView):
    @require_role("editor")
    @blp.arguments(EntityBulkSchema)
    @blp.response(201, EntitySchema(many=True))
    def post(self, data: dict[str, Any]) -> Any:
        """Create up to 10,000 entities, all or nothing, returned in request order"""
        caller = current_caller()
        session = db_session()

        def create() -> tuple[Any, int]:
            rows = service.create_entities(
                session=session, workspace_id=caller.workspace_id, items=data["entities"]
            )
            return [_dump(r) for r in rows], 201

        body, status, _ = idempotent(
            session=session,
            key=request.headers.get("Idempotency-Key"),
            workspace_id=caller.workspace_id,
            scope="entities.bulk",
            body=request.get_json(silent=True),
            action=create,
        )
        # Already dumped: load-then-dump would be wasted work for 10,000 rows.
        return _raw(body, status)


def _raw(body: Any, status: int) -> Any:
    """A pre-serialised JSON response that bypasses the response schema."""
    from flask import jsonify

    response = jsonify(body)
    response.status_code = status
    return response


@blp.route("/<entity_id>")
class EntitiesById(MethodView):
    @require_role("viewer")
    @blp.response(200, EntitySchema)
    def get(self, entity_id: str) -> Any:
        """Get an entity (its ETag is its version)"""
        row = service.get_entity(
            session=db_session(), workspace_id=current_caller().workspace_id, entity_id=entity_id
        )
        return row, _etag(row.version)

    @require_role("editor")
    @blp.arguments(EntityUpdateSchema)
    @blp.response(200, EntitySchema)
    def patch(self, data: dict[str, Any], entity_id: str) -> Any:
        """Update an entity; send If-Match with its version to refuse a stale write (412)"""
        row = service.update_entity(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            entity_id=entity_id,
            data=data,
            expected_version=service.parse_if_match(request.headers.get("If-Match")),
        )
        return row, _etag(row.version)

    @require_role("editor")
    @blp.response(204)
    def delete(self, entity_id: str) -> None:
        """Delete an entity"""
        service.delete_entity(
            session=db_session(), workspace_id=current_caller().workspace_id, entity_id=entity_id
        )


@blp.route("/<entity_id>/runs")
class EntityRuns(MethodView):
    @require_role("viewer")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, EntityRunSchema(many=True))
    def get(self, args: dict[str, Any], entity_id: str) -> Any:
        """The runs that touched this entity, newest first, and how each ended for it"""
        session = db_session()
        service.get_entity(
            session=session, workspace_id=current_caller().workspace_id, entity_id=entity_id
        )
        query = (
            select(RunItem, Run)
            .join(Run, col(Run.id) == col(RunItem.run_id))
            .where(col(RunItem.entity_id) == entity_id)
        )
        rows = [
            {
                "run_id": run.id,
                "workflow_id": run.workflow_id,
                "run_status": run.status,
                "status": item.status,
                "error": item.error,
                "created_at": run.created_at,
                "completed_at": item.completed_at,
            }
            for item, run in session.execute(
                keyset_page(query, col(RunItem.run_id), args, descending=True)
            )
        ]
        return page_headers(rows, args, "run_id")
