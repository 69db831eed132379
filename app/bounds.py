"""Integers the database holds: a marshmallow bound for every integer field, so a number
that would overflow a BIGINT is a 422 at the schema instead of a database error."""

from __future__ import annotations

import marshmallow as ma

# Integers the database can hold (PostgreSQL BIGINT, SQLite INTEGER): a larger one in a
# query or body would reach SQL and fail there.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT64_RANGE = ma.validate.Range(
    min=INT64_MIN, max=INT64_MAX, error="Must be a 64-bit integer (at most {max})."
)


def bound_integers(field_obj: ma.fields.Field) -> None:
    """Add the 64-bit range to an integer field, or to the integers a container holds."""
    if isinstance(field_obj, ma.fields.Integer) and INT64_RANGE not in field_obj.validators:
        field_obj.validators = [*field_obj.validators, INT64_RANGE]
    elif isinstance(field_obj, ma.fields.List):
        bound_integers(field_obj.inner)
    elif isinstance(field_obj, ma.fields.Dict) and field_obj.value_field is not None:
        bound_integers(field_obj.value_field)
