"""Bulk UPDATE: many rows, each with its own values, in one statement.

A chunk checkpoint rewrites hundreds of run items and entities at once. On PostgreSQL the
rows travel as one JSON document and the UPDATE joins ``jsonb_to_recordset`` of it: one
statement and one plan whatever the row count, instead of one statement per row. Other
databases (the embedded SQLite, where a statement costs no round trip) run the equivalent
UPDATE once per row.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.types import JSON, Boolean, Integer, TypeEngine


def bulk_update(
    connection: Connection,
    table: Table,
    keys: Sequence[Mapping[str, Any]],
    values: Sequence[Mapping[str, Any]],
    *,
    fixed: Mapping[str, Any] | None = None,
    returning: str,
) -> list[Any]:
    """For each i, set ``values[i]`` on the row whose columns equal ``keys[i]``.

    ``fixed`` adds equality conditions shared by every row (say, the run id). Every
    ``keys[i]`` names the same columns, and so does every ``values[i]``. Returns the
    ``returning`` key column of the rows that matched and were updated.
    """
    if not keys:
        return []
    fixed = dict(fixed or {})
    if connection.dialect.name == "postgresql":
        return _recordset_update(connection, table, keys, values, fixed, returning)
    statement = update(table).where(
        *(table.c[k] == bindparam(f"k_{k}") for k in keys[0]),
        *(table.c[k] == value for k, value in fixed.items()),
    )
    statement = statement.values({name: bindparam(f"v_{name}") for name in values[0]})
    updated = []
    for key, value in zip(keys, values, strict=True):
        params = {
            **{f"k_{k}": v for k, v in key.items()},
            **{f"v_{c}": v for c, v in value.items()},
        }
        if connection.execute(statement, params).rowcount:  # type: ignore[attr-defined]
            updated.append(key[returning])
    return updated


def _sql_type(column_type: TypeEngine[Any]) -> str:
    """The PostgreSQL type a column's values are read back from the JSON document as."""
    if isinstance(column_type, JSON):
        return "jsonb"
    if isinstance(column_type, Boolean):
        return "boolean"
    if isinstance(column_type, Integer):
        return "bigint"
    return "text"


def _recordset_update(
    connection: Connection,
    table: Table,
    keys: Sequence[Mapping[str, Any]],
    values: Sequence[Mapping[str, Any]],
    fixed: dict[str, Any],
    returning: str,
) -> list[Any]:
    """``UPDATE t SET ... FROM jsonb_to_recordset(:rows) AS v(...) WHERE t.key = v.key``."""
    quote = connection.dialect.identifier_preparer.quote
    key_names, value_names = list(keys[0]), list(values[0])
    fields = [(f"k_{k}", k) for k in key_names] + [(f"v_{c}", c) for c in value_names]
    document = json.dumps(
        [
            {**{f"k_{k}": v for k, v in key.items()}, **{f"v_{c}": v for c, v in value.items()}}
            for key, value in zip(keys, values, strict=True)
        ]
    )
    record = ", ".join(f"{quote(field)} {_sql_type(table.c[col].type)}" for field, col in fields)
    sets = ", ".join(f"{quote(c)} = v.{quote('v_' + c)}" for c in value_names)
    conditions = [f"t.{quote(k)} = v.{quote('k_' + k)}" for k in key_names]
    # The first key column also goes in as an array the index can be searched with: joined
    # to the recordset alone, the planner may scan the whole table (it guesses 100 rows).
    lead = key_names[0]
    conditions.append(
        f"t.{quote(lead)} = ANY(CAST(ARRAY(SELECT jsonb_array_elements_text("
        f"CAST(:lead AS jsonb))) AS {_sql_type(table.c[lead].type)}[]))"
    )
    params: dict[str, Any] = {"rows": document, "lead": json.dumps([k[lead] for k in keys])}
    for i, (name, value) in enumerate(fixed.items()):
        params[f"f{i}"] = value
        conditions.append(f"t.{quote(name)} = :f{i}")
    # Identifiers come from the table's metadata, quoted; every value is a bound parameter.
    sql = (
        f"UPDATE {quote(table.name)} AS t SET {sets} "  # noqa: S608
        f"FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS v({record}) "
        f"WHERE {' AND '.join(conditions)} RETURNING t.{quote(returning)}"
    )
    return list(connection.execute(text(sql), params).scalars())
