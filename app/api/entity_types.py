"""``/api/v1/entity-types``: entity types with a JSON Schema for their data."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from sqlmodel import col, select

from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import EntityType
from app.pagination import PageArgs, keyset_page, page_headers
from app.schemas.entities import EntityTypeSchema, EntityTypeUpdateSchema
from app.services import entities as service

URL_PREFIX = "/entity-types"
blp = Blueprint("entity_types", __name__, description="Entity types and their data schemas.")


@blp.route("")
class EntityTypes(MethodView):
    @require_role("viewer")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, EntityTypeSchema(many=True))
    def get(self, args: dict[str, Any]) -> Any:
        """List entity types"""
        query = select(EntityType).where(EntityType.workspace_id == current_caller().workspace_id)
        rows = list(db_session().exec(keyset_page(query, col(EntityType.id), args)))
        return page_headers(rows, args, "id")

    @require_role("editor")
    @blp.arguments(EntityTypeSchema)
    @blp.response(201, EntityTypeSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create an entity type"""
        return service.create_entity_type(
            session=db_session(), workspace_id=current_caller().workspace_id, data=data
        )


@blp.route("/<type_id>")
class EntityTypesById(MethodView):
    @require_role("viewer")
    @blp.response(200, EntityTypeSchema)
    def get(self, type_id: str) -> Any:
        """Get an entity type"""
        return service.get_entity_type(
            session=db_session(), workspace_id=current_caller().workspace_id, type_id=type_id
        )

    @require_role("editor")
    @blp.arguments(EntityTypeUpdateSchema)
    @blp.response(200, EntityTypeSchema)
    def patch(self, data: dict[str, Any], type_id: str) -> Any:
        """Update an entity type"""
        return service.update_entity_type(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            type_id=type_id,
            data=data,
        )

    @require_role("editor")
    @blp.response(204)
    def delete(self, type_id: str) -> None:
        """Delete an entity type (409 while entities or workflows use it)"""
        service.delete_entity_type(
            session=db_session(), workspace_id=current_caller().workspace_id, type_id=type_id
        )
