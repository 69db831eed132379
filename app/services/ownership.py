"""Rows a workspace owns: one lookup that answers 404 for a missing row and for another
workspace's alike, so an id never reveals that it exists elsewhere."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlmodel import Session

from app.errors import NotFound


class Owned(Protocol):
    """A row that belongs to one workspace."""

    workspace_id: str


M = TypeVar("M", bound=Owned)


def get_owned(session: Session, model: type[M], id: Any, workspace_id: str, *, what: str) -> M:
    """The ``model`` row ``id`` of ``workspace_id``, or 404 ``"<what> not found."``."""
    row = session.get(model, id)
    if row is None or row.workspace_id != workspace_id:
        raise NotFound(f"{what} not found.")
    return row
