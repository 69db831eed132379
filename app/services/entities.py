"""Entity types and entities: schema-checked data with optimistic versions."""

from __future__ import annotations

from typing import Any

from jsonschema.exceptions import SchemaError
from sqlalchemy import delete, exists, insert, select, update
from sqlmodel import Session, col

from app.errors import Conflict, PreconditionFailed, ValidationFailed
from app.ids import new_id, now_ms
from app.models import Entity, EntityType
from app.services.ownership import get_owned
from steps import schemas

MAX_BULK = 10_000


def json_path(root: str, parts: Any) -> str:
    """``("data", ["tags", 0])`` → ``data.tags[0]``: the same flattened paths as other errors."""
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def check_json_schema(schema: dict[str, Any]) -> None:
    """422 unless ``schema`` is a valid JSON Schema 2020-12 whose regexes RE2 can run."""
    try:
        schemas.check_schema(schema)
    except SchemaError as exc:
        where = json_path("schema", exc.path)
        raise ValidationFailed(
            f"Not a valid JSON Schema: {exc.message}", {where: [exc.message]}
        ) from exc


def data_errors(schema: dict[str, Any] | None, data: Any) -> dict[str, list[str]]:
    """``{"data.price": ["-1 is less than the minimum of 0"]}`` for each failing path."""
    if not schema:
        return {}
    validator = schemas.validator(schema)  # regexes on RE2: no input can take super-linear time
    errors: dict[str, list[str]] = {}
    for error in validator.iter_errors(data):
        path = json_path("data", error.absolute_path)
        errors.setdefault(path, []).append(error.message)
    return errors


# --- entity types -------------------------------------------------------------------


def get_entity_type(*, session: Session, workspace_id: str, type_id: str) -> EntityType:
    """The entity type, or 404 (also for another workspace's)."""
    return get_owned(session, EntityType, type_id, workspace_id, what="Entity type")


def create_entity_type(*, session: Session, workspace_id: str, data: dict[str, Any]) -> EntityType:
    """A new entity type with a checked JSON Schema."""
    schema = data.get("schema_") or {"type": "object"}
    check_json_schema(schema)
    row = EntityType(
        id=new_id("et"),
        workspace_id=workspace_id,
        name=data["name"],
        description=data.get("description"),
        schema_=schema,
    )
    session.add(row)
    session.commit()
    return row


def update_entity_type(
    *, session: Session, workspace_id: str, type_id: str, data: dict[str, Any]
) -> EntityType:
    """Change name, description or schema (existing entities are not re-checked)."""
    row = get_entity_type(session=session, workspace_id=workspace_id, type_id=type_id)
    if "schema_" in data:
        check_json_schema(data["schema_"])
        row.schema_ = data["schema_"]
    for field in ("name", "description"):
        if field in data:
            setattr(row, field, data[field])
    row.updated_at = now_ms()
    session.add(row)
    session.commit()
    return row


def delete_entity_type(*, session: Session, workspace_id: str, type_id: str) -> None:
    """Delete a type; 409 while it has entities or workflows."""
    from app.models import Workflow

    row = get_entity_type(session=session, workspace_id=workspace_id, type_id=type_id)
    if session.scalar(select(exists().where(col(Entity.entity_type_id) == type_id))):
        raise Conflict("This entity type has entities; delete them first.")
    if session.scalar(select(exists().where(col(Workflow.entity_type_id) == type_id))):
        raise Conflict("Workflows use this entity type; delete them first.")
    session.delete(row)
    session.commit()


# --- entities -----------------------------------------------------------------------


def get_entity(*, session: Session, workspace_id: str, entity_id: str) -> Entity:
    """The entity, or 404 (also for another workspace's)."""
    return get_owned(session, Entity, entity_id, workspace_id, what="Entity")


def _new_entity(workspace_id: str, item: dict[str, Any], now: int) -> dict[str, Any]:
    """The column values of a new entity."""
    return {
        "id": new_id("ent"),
        "workspace_id": workspace_id,
        "entity_type_id": item["entity_type_id"],
        "data": item["data"],
        "status": item.get("status") or "draft",
        "version": 1,
        "published_at": None,
        "published_version": None,
        "created_at": now,
        "updated_at": now,
    }


def create_entities(
    *, session: Session, workspace_id: str, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Insert entities all or nothing; 422 with errors keyed by index. Flushes, no commit."""
    if len(items) > MAX_BULK:
        raise ValidationFailed(
            f"At most {MAX_BULK} entities per call.", {"entities": [f"Got {len(items)}."]}
        )
    type_ids = {item["entity_type_id"] for item in items}
    types = {
        t.id: t
        for t in session.scalars(
            select(EntityType).where(
                col(EntityType.workspace_id) == workspace_id, col(EntityType.id).in_(type_ids)
            )
        )
    }
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        entity_type = types.get(item["entity_type_id"])
        if entity_type is None:
            errors[f"entities[{index}].entityTypeId"] = ["Unknown entity type."]
            continue
        for path, messages in data_errors(entity_type.schema_, item["data"]).items():
            errors[f"entities[{index}].{path}"] = messages
    if errors:
        first = next(iter(errors))
        raise ValidationFailed(
            f"{len(errors)} problem(s) in the entities, first at {first}; nothing was created.",
            errors,
        )
    now = now_ms()
    rows = [_new_entity(workspace_id, item, now) for item in items]
    if rows:
        session.execute(insert(Entity), rows)
    return rows


def create_entity(*, session: Session, workspace_id: str, data: dict[str, Any]) -> dict[str, Any]:
    """One entity; its errors are reported without the ``entities[0].`` prefix."""
    try:
        row = create_entities(session=session, workspace_id=workspace_id, items=[data])[0]
    except ValidationFailed as exc:
        errors = {k.removeprefix("entities[0]."): v for k, v in (exc.errors or {}).items()}
        message = "; ".join(f"{k}: {' '.join(v)}" for k, v in list(errors.items())[:5])
        raise ValidationFailed(f"The entity is not valid: {message}", errors) from exc
    return row


def parse_if_match(header: str | None) -> int | None:
    """``If-Match: "3"`` (or ``3``, ``W/"3"``) → 3."""
    if header is None:
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if value == "*":
        return None
    try:
        return int(value)
    except ValueError as exc:
        raise PreconditionFailed(
            "If-Match must be the entity's version, as returned in its ETag."
        ) from exc


def update_entity(
    *,
    session: Session,
    workspace_id: str,
    entity_id: str,
    data: dict[str, Any],
    expected_version: int | None,
) -> Entity:
    """Replace ``data`` and/or ``status``; 412 when ``expected_version`` is stale."""
    row = get_entity(session=session, workspace_id=workspace_id, entity_id=entity_id)
    if expected_version is not None and expected_version != row.version:
        raise PreconditionFailed(
            f"Version mismatch: the entity is at version {row.version}, not {expected_version}."
        )
    values: dict[str, Any] = {}
    if "data" in data:
        entity_type = session.get(EntityType, row.entity_type_id)
        errors = data_errors(entity_type.schema_ if entity_type else None, data["data"])
        if errors:
            raise ValidationFailed("The entity data does not match its type's schema.", errors)
        values["data"] = data["data"]
    if "status" in data:
        values["status"] = data["status"]
    if values:
        values["updated_at"] = now_ms()
        values["version"] = row.version + 1
        # Compare-and-set on version: a concurrent writer makes this a 412, never a lost update.
        result = session.execute(
            update(Entity)
            .where(col(Entity.id) == row.id, col(Entity.version) == row.version)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            raise PreconditionFailed("The entity changed while it was being updated; retry.")
        session.commit()
        session.refresh(row)
    return row


def delete_entity(*, session: Session, workspace_id: str, entity_id: str) -> None:
    """Delete an entity."""
    row = get_entity(session=session, workspace_id=workspace_id, entity_id=entity_id)
    session.execute(delete(Entity).where(col(Entity.id) == row.id))
    session.commit()
