"""Apply a run's changes to entity data that another writer changed meanwhile."""

from __future__ import annotations

import copy
from typing import Any

_REMOVED = object()


def diff(base: Any, new: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """The ``(path, value)`` changes turning ``base`` into ``new`` (``_REMOVED`` for deletions)."""
    if isinstance(base, dict) and isinstance(new, dict):
        changes: list[tuple[tuple[str, ...], Any]] = []
        for key in base.keys() | new.keys():
            if key not in new:
                changes.append(((*path, key), _REMOVED))
            elif key not in base:
                changes.append(((*path, key), new[key]))
            elif base[key] != new[key]:
                changes.extend(diff(base[key], new[key], (*path, key)))
        return changes
    return [] if base == new else [(path, new)]


def apply(data: dict[str, Any], changes: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    """A copy of ``data`` with ``changes`` applied; this run wins on paths both changed."""
    result = copy.deepcopy(data)
    for path, value in changes:
        if not path:
            return copy.deepcopy(value) if isinstance(value, dict) else result
        node = result
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        if value is _REMOVED:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = copy.deepcopy(value)
    return result


def merge(base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Three-way merge: our changes since ``base``, applied on top of ``theirs``."""
    return apply(theirs, diff(base, ours))
