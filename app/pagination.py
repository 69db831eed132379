"""Keyset (cursor) pagination: cost stays flat however deep the page."""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar
from urllib.parse import urlencode

import marshmallow as ma
from flask import request
from sqlalchemy import Select
from sqlalchemy.orm import Mapped

from app.bounds import bound_integers
from app.errors import ValidationFailed
from app.jsonbody import unstorable_reason

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

# Any SELECT (SQLAlchemy's or SQLModel's, of any columns): keyset_page hands back the same type.
_SelectT = TypeVar("_SelectT", bound=Select[*tuple[Any, ...]])


class PageArgs(ma.Schema):
    """``limit`` and ``cursor`` query parameters shared by every list."""

    class Meta:
        unknown = ma.RAISE

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        """Every integer filter of a list (``updatedSince``...) holds in 64 bits."""
        bound_integers(field_obj)

    limit = ma.fields.Integer(
        load_default=DEFAULT_LIMIT,
        validate=ma.validate.Range(min=1, max=MAX_LIMIT),
        metadata={"description": f"Page size (1-{MAX_LIMIT})."},
    )
    cursor = ma.fields.String(
        load_default=None, metadata={"description": "Opaque cursor from `X-Next-Cursor`."}
    )


def encode_cursor(value: str | int) -> str:
    """An opaque cursor for the last row of a page."""
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The position a cursor names, or a 422 when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        # validate=True: a cursor with characters outside the alphabet is refused, not skipped.
        return base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationFailed("Invalid cursor.", {"cursor": ["Not a valid cursor."]}) from exc


def cursor_position(cursor: str, key_type: type = str) -> Any:
    """The key value a cursor names, or a 422: a forged cursor that decodes to something
    no row can hold (NUL, a surrogate, an integer beyond 64 bits) is refused too."""
    raw = decode_cursor(cursor)
    invalid = ValidationFailed("Invalid cursor.", {"cursor": ["Not a valid cursor."]})
    if unstorable_reason(raw):
        raise invalid
    try:
        position = key_type(raw)
    except ValueError as exc:
        raise invalid from exc
    if isinstance(position, int) and not -(2**63) <= position < 2**63:
        raise invalid
    return position


def keyset_page(
    query: _SelectT,
    key: Mapped[Any],
    args: dict[str, Any],
    *,
    descending: bool = False,
    key_type: type = str,
) -> _SelectT:
    """Restrict ``query`` to the page after ``args['cursor']``, ordered by ``key``."""
    cursor = args.get("cursor")
    if cursor:
        position = cursor_position(cursor, key_type)
        query = query.where(key < position if descending else key > position)
    order = key.desc() if descending else key.asc()
    # One extra row tells whether a next page exists without a COUNT.
    return query.order_by(order).limit(args["limit"] + 1)


def page_headers(
    rows: list[Any], args: dict[str, Any], key: str
) -> tuple[list[Any], dict[str, str]]:
    """Trim the look-ahead row and build ``X-Next-Cursor`` and ``Link`` headers."""
    limit = args["limit"]
    headers: dict[str, str] = {}
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        value = last[key] if isinstance(last, dict) else getattr(last, key)
        cursor = encode_cursor(value)
        params = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
        params.append(("cursor", cursor))
        headers["X-Next-Cursor"] = cursor
        headers["Link"] = f'<{request.base_url}?{urlencode(params)}>; rel="next"'
    return rows, headers
