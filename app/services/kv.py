"""The key-value store: namespaced JSON values per workspace that last across runs.

Every write is one statement, so concurrent writers never lose an update: a plain put is
an upsert that bumps ``version``; a compare-and-set is an ``UPDATE … WHERE version = :v``
(412 when it matches no row); an increment is an upsert whose update is
``value = value + n`` computed by the database, so two runs adding 1 a thousand times
each end at exactly 2,000. :func:`apply_kv_writes` is the engine's entry point: it applies
an entity's ``kvSet``/``kvIncr`` in the caller's transaction, keys in sorted order so two
transactions touching the same keys lock them in the same order and cannot deadlock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, text
from sqlmodel import Session, col

from app.errors import Conflict, NotFound, PreconditionFailed, ValidationFailed
from app.ids import now_ms
from app.models import KvEntry

MAX_VALUE_BYTES = 64 * 1024
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


class KvNotANumber(Conflict):
    """``kvIncr`` on a key whose value is not a number."""


def check_name(namespace: str, key: str | None = None) -> None:
    """422 unless the namespace (and key) are well-formed."""
    errors: dict[str, list[str]] = {}
    if not NAMESPACE_PATTERN.match(namespace):
        errors["namespace"] = ["1-100 characters of A-Z a-z 0-9 _ . -"]
    if key is not None and not KEY_PATTERN.match(key):
        errors["key"] = ["1-200 characters of A-Z a-z 0-9 _ . : @ -"]
    if errors:
        raise ValidationFailed("Invalid namespace or key.", errors)


def split_ref(ref: str) -> tuple[str, str]:
    """``"namespace/key"`` → ``("namespace", "key")`` (422 when malformed)."""
    namespace, sep, key = ref.partition("/")
    if not sep:
        raise ValidationFailed(
            f"KV reference {ref!r} must be 'namespace/key'.", {"ref": ["Expected 'ns/key'."]}
        )
    check_name(namespace, key)
    return namespace, key


def _dumps(value: Any) -> str:
    """Compact JSON; NaN and Infinity (which Python's parser accepts) are refused."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except ValueError as exc:
        raise ValidationFailed("A value must be plain JSON (no NaN or Infinity).") from exc


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON."""
    return len(_dumps(value).encode())


def get_kv(*, session: Session, workspace_id: str, namespace: str, key: str) -> KvEntry:
    """The entry, or 404."""
    entry = session.get(KvEntry, (workspace_id, namespace, key))
    if entry is None:
        raise NotFound(f"No value at {namespace}/{key}.")
    return entry


def read_kv(
    session: Session, *, workspace_id: str, namespace: str, key: str, default: Any = None
) -> Any:
    """The value at ``namespace/key``, or ``default`` (for ``kv()`` in templates)."""
    value = session.scalar(
        select(col(KvEntry.value)).where(
            col(KvEntry.workspace_id) == workspace_id,
            col(KvEntry.namespace) == namespace,
            col(KvEntry.key) == key,
        )
    )
    return default if value is None else value


# One statement per write, per dialect (PostgreSQL casts the JSON text to jsonb).
_UPSERT = {
    "postgresql": (
        "INSERT INTO kv_entries (workspace_id, namespace, key, value, version, updated_at)"
        " VALUES (:ws, :ns, :key, CAST(:value AS jsonb), 1, :now)"
        " ON CONFLICT (workspace_id, namespace, key) DO UPDATE SET value = excluded.value,"
        " version = kv_entries.version + 1, updated_at = excluded.updated_at"
    ),
    "sqlite": (
        "INSERT INTO kv_entries (workspace_id, namespace, key, value, version, updated_at)"
        " VALUES (:ws, :ns, :key, :value, 1, :now)"
        " ON CONFLICT (workspace_id, namespace, key) DO UPDATE SET value = excluded.value,"
        " version = kv_entries.version + 1, updated_at = excluded.updated_at"
    ),
}
# Compare-and-set: the version check and the write are one statement.
_COMPARE_AND_SET = {
    "postgresql": (
        "UPDATE kv_entries SET value = CAST(:value AS jsonb), version = version + 1,"
        " updated_at = :now WHERE workspace_id = :ws AND namespace = :ns AND key = :key"
        " AND version = :expected RETURNING version"
    ),
    "sqlite": (
        "UPDATE kv_entries SET value = :value, version = version + 1,"
        " updated_at = :now WHERE workspace_id = :ws AND namespace = :ns AND key = :key"
        " AND version = :expected RETURNING version"
    ),
}


def _dialect(session: Session) -> str:
    dialect = session.get_bind().dialect.name
    if dialect not in _UPSERT:
        raise NotImplementedError(f"Conveyor runs on PostgreSQL or SQLite, not {dialect}")
    return dialect


def put_kv(
    *,
    session: Session,
    workspace_id: str,
    namespace: str,
    key: str,
    value: Any,
    expected_version: int | None = None,
) -> KvEntry:
    """Set a value (flushes, no commit). With ``expected_version``: compare-and-set, 412 when
    the stored version differs or the key does not exist."""
    check_name(namespace, key)
    size = encoded_size(value)
    if size > MAX_VALUE_BYTES:
        raise ValidationFailed(f"A value is at most {MAX_VALUE_BYTES} bytes; got {size}.")
    dialect = _dialect(session)
    params = {
        "ws": workspace_id,
        "ns": namespace,
        "key": key,
        "value": _dumps(value),
        "now": now_ms(),
    }
    if expected_version is not None:
        row = session.execute(
            text(_COMPARE_AND_SET[dialect]), {**params, "expected": expected_version}
        ).first()
        if row is None:
            raise PreconditionFailed(
                f"{namespace}/{key} is not at version {expected_version}; read it and retry."
            )
    else:
        session.execute(text(_UPSERT[dialect]), params)
    session.expire_all()
    return get_kv(session=session, workspace_id=workspace_id, namespace=namespace, key=key)


def delete_kv(
    *,
    session: Session,
    workspace_id: str,
    namespace: str,
    key: str,
    expected_version: int | None = None,
) -> None:
    """Delete a value (404 when absent; 412 when ``expected_version`` is stale). No commit."""
    query = delete(KvEntry).where(
        col(KvEntry.workspace_id) == workspace_id,
        col(KvEntry.namespace) == namespace,
        col(KvEntry.key) == key,
    )
    if expected_version is not None:
        query = query.where(col(KvEntry.version) == expected_version)
    result = session.execute(query)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        get_kv(session=session, workspace_id=workspace_id, namespace=namespace, key=key)
        raise PreconditionFailed(f"{namespace}/{key} is not at version {expected_version}.")


# value = value + n, computed by the database; a stored non-number matches no row (409).
_INCREMENT = {
    "postgresql": (
        "INSERT INTO kv_entries (workspace_id, namespace, key, value, version, updated_at)"
        " VALUES (:ws, :ns, :key, to_jsonb(CAST(:n AS numeric)), 1, :now)"
        " ON CONFLICT (workspace_id, namespace, key) DO UPDATE"
        " SET value = to_jsonb(CAST(kv_entries.value #>> '{}' AS numeric) + CAST(:n AS numeric)),"
        " version = kv_entries.version + 1, updated_at = excluded.updated_at"
        " WHERE jsonb_typeof(kv_entries.value) = 'number' RETURNING version"
    ),
    "sqlite": (
        "INSERT INTO kv_entries (workspace_id, namespace, key, value, version, updated_at)"
        " VALUES (:ws, :ns, :key, json_quote(:n), 1, :now)"
        " ON CONFLICT (workspace_id, namespace, key) DO UPDATE"
        " SET value = json_quote(json_extract(kv_entries.value, '$') + :n),"
        " version = kv_entries.version + 1, updated_at = excluded.updated_at"
        " WHERE json_type(kv_entries.value) IN ('integer', 'real') RETURNING version"
    ),
}


def _check_number(ref: str, amount: Any) -> None:
    if (
        isinstance(amount, bool)
        or not isinstance(amount, int | float)
        or (isinstance(amount, float) and not math.isfinite(amount))
    ):
        raise ValidationFailed(
            f"kvIncr {ref!r} must add a finite number.", {"kvIncr": [f"{ref}: not a number"]}
        )


def apply_kv_writes(
    session: Session,
    *,
    workspace_id: str,
    sets: Mapping[str, Any] | None = None,
    increments: Mapping[str, int | float] | None = None,
) -> None:
    """Apply an entity's ``kvSet`` and ``kvIncr`` in the caller's transaction (no commit).

    ``sets`` and ``increments`` map ``"namespace/key"`` to a value / an amount. Sets are
    upserts; each increment is one ``value = value + n`` upsert, so concurrent runs never
    lose a count. Keys are written in sorted order (no deadlocks between runs). A malformed
    reference or a too-large value is a 422, an increment of a non-number a 409
    (:class:`KvNotANumber`); either leaves the transaction for the caller to roll back.
    """
    dialect = _dialect(session)
    now = now_ms()
    writes: list[tuple[str, str, Any]] = [("set", ref, v) for ref, v in (sets or {}).items()]
    writes += [("incr", ref, n) for ref, n in (increments or {}).items()]
    for kind, ref, value in sorted(writes, key=lambda w: (w[1], w[0])):
        namespace, key = split_ref(ref)
        if kind == "set":
            size = encoded_size(value)
            if size > MAX_VALUE_BYTES:
                raise ValidationFailed(
                    f"kvSet {ref!r}: a value is at most {MAX_VALUE_BYTES} bytes; got {size}."
                )
            params = {"ws": workspace_id, "ns": namespace, "key": key, "now": now}
            session.execute(text(_UPSERT[dialect]), {**params, "value": _dumps(value)})
            continue
        _check_number(ref, value)
        row = session.execute(
            text(_INCREMENT[dialect]),
            {"ws": workspace_id, "ns": namespace, "key": key, "n": value, "now": now},
        ).first()
        if row is None:
            raise KvNotANumber(f"kvIncr {ref!r}: the stored value is not a number.")
