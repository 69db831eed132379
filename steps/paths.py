"""Dotted paths into entity data: ``seo.title`` names ``data["seo"]["title"]``."""

from __future__ import annotations

import re
from typing import Any

_MISSING = object()
PATH_PATTERN = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


def split(path: str) -> list[str]:
    """The keys of a dotted path."""
    return path.split(".")


def get_path(data: dict[str, Any], path: str, default: Any = None) -> Any:
    """The value at ``path``, or ``default``."""
    node: Any = data
    for key in split(path):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def has_path(data: dict[str, Any], path: str) -> bool:
    """True when ``path`` exists."""
    return get_path(data, path, _MISSING) is not _MISSING


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value``, creating objects on the way."""
    keys = split(path)
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def unset_path(data: dict[str, Any], path: str) -> bool:
    """Remove ``path``; True when something was removed."""
    keys = split(path)
    node: Any = data
    for key in keys[:-1]:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if isinstance(node, dict) and keys[-1] in node:
        del node[keys[-1]]
        return True
    return False
