"""Identifiers and timestamps: prefixed ULIDs and epoch milliseconds."""

from __future__ import annotations

import time

from ulid import ULID


def new_id(prefix: str) -> str:
    """A new time-sortable id such as ``ent_01JD8...`` (prefix plus a ULID)."""
    return f"{prefix}_{ULID()}"


def now_ms() -> int:
    """The current time in milliseconds since the Unix epoch."""
    return time.time_ns() // 1_000_000
