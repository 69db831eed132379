"""``/api/v1/kv``: namespaced JSON values per workspace, with compare-and-set."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.views import MethodView
from sqlalchemy import select
from sqlmodel import col
from webargs.flaskparser import abort

from app import jsonbody
from app.api import Blueprint
from app.auth import current_caller, require_role
from app.db import db_session
from app.models import KvEntry
from app.pagination import keyset_page, page_headers
from app.schemas.kv import KvEntrySchema, KvKeySchema, KvQueryArgsSchema
from app.services import audit
from app.services import kv as service
from app.services.entities import parse_if_match

URL_PREFIX = "/kv"
blp = Blueprint(
    "kv",
    __name__,
    description="Key-value store: JSON values (at most 64 KB) that last across runs. "
    "Templates read them with `kv('namespace', 'key', default)`; a `transform` writes with "
    "`kvSet` / `kvIncr`, applied when the entity completes.",
)

_ANY_JSON_BODY = {
    "required": True,
    "description": "Any JSON value, at most 64 KB.",
    "content": {"application/json": {"schema": {}, "example": {"lastSku": "A-1042", "n": 7}}},
}
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "The version you read (its ETag): the write happens only if it is still "
    "current, else 412.",
    "schema": {"type": "string"},
}


def entry_view(entry: KvEntry) -> dict[str, Any]:
    return {
        "namespace": entry.namespace,
        "key": entry.key,
        "value": entry.value,
        "version": entry.version,
        "updated_at": entry.updated_at,
    }


def _etag(entry: KvEntry) -> dict[str, str]:
    return {"ETag": f'"{entry.version}"'}


def _body() -> Any:
    """The request's JSON value: 413 above 64 KB, 400 when it is not JSON."""
    if (request.content_length or 0) > service.MAX_VALUE_BYTES:
        abort(413, message=f"A value is at most {service.MAX_VALUE_BYTES:,} bytes.")
    raw = request.get_data(cache=True)
    if len(raw) > service.MAX_VALUE_BYTES:
        abort(413, message=f"A value is at most {service.MAX_VALUE_BYTES:,} bytes.")
    try:
        return jsonbody.loads(raw)  # the app's strict loader: NaN, depth, NUL...
    except (ValueError, UnicodeDecodeError):
        abort(400, message="The body must be one JSON value.")


@blp.route("/<namespace>")
class KvNamespace(MethodView):
    @require_role("viewer")
    @blp.arguments(KvQueryArgsSchema, location="query")
    @blp.response(200, KvKeySchema(many=True))
    def get(self, args: dict[str, Any], namespace: str) -> Any:
        """List a namespace's keys (without values), in key order"""
        service.check_name(namespace)
        query = select(KvEntry).where(
            col(KvEntry.workspace_id) == current_caller().workspace_id,
            col(KvEntry.namespace) == namespace,
        )
        if "prefix" in args:
            query = query.where(col(KvEntry.key).startswith(args["prefix"], autoescape=True))
        rows = [
            {
                "namespace": e.namespace,
                "key": e.key,
                "version": e.version,
                "updated_at": e.updated_at,
            }
            for e in db_session().scalars(keyset_page(query, col(KvEntry.key), args))
        ]
        return page_headers(rows, args, "key")


@blp.route("/<namespace>/<key>")
class KvByKey(MethodView):
    @require_role("viewer")
    @blp.response(200, KvEntrySchema)
    def get(self, namespace: str, key: str) -> Any:
        """Get a value with its version (also its ETag)"""
        service.check_name(namespace, key)
        entry = service.get_kv(
            session=db_session(),
            workspace_id=current_caller().workspace_id,
            namespace=namespace,
            key=key,
        )
        return entry_view(entry), _etag(entry)

    @require_role("editor")
    @blp.doc(requestBody=_ANY_JSON_BODY, parameters=[_IF_MATCH])
    @blp.response(200, KvEntrySchema)
    @blp.alt_response(412, description="If-Match names a version that is no longer current")
    @blp.alt_response(413, description="The value is larger than 64 KB")
    def put(self, namespace: str, key: str) -> Any:
        """Set a value; with If-Match: <version>, only if it is still at that version (412)"""
        value = _body()
        session = db_session()
        entry = service.put_kv(
            session=session,
            workspace_id=current_caller().workspace_id,
            namespace=namespace,
            key=key,
            value=value,
            expected_version=parse_if_match(request.headers.get("If-Match")),
        )
        audit.annotate(session, resource_id=f"{namespace}/{key}", version=entry.version)
        session.commit()
        return entry_view(entry), _etag(entry)

    @require_role("editor")
    @blp.doc(parameters=[_IF_MATCH])
    @blp.response(204)
    def delete(self, namespace: str, key: str) -> None:
        """Delete a value (If-Match: <version> deletes only that version)"""
        service.check_name(namespace, key)
        session = db_session()
        service.delete_kv(
            session=session,
            workspace_id=current_caller().workspace_id,
            namespace=namespace,
            key=key,
            expected_version=parse_if_match(request.headers.get("If-Match")),
        )
        audit.annotate(session, resource_id=f"{namespace}/{key}")
        session.commit()
