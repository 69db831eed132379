"""Workspaces and their API keys."""

from __future__ import annotations

from sqlmodel import Session, select

from app.errors import NotFound
from app.ids import new_id
from app.keys import generate_key
from app.models import ApiKey, Workspace
from app.services.ownership import get_owned
from app.statuses import ROLES


def create_api_key(
    *, session: Session, workspace_id: str, name: str, role: str
) -> tuple[ApiKey, str]:
    """A new key; the full key is returned once and only its hash is stored."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    key, prefix, digest = generate_key()
    row = ApiKey(
        id=new_id("key"),
        workspace_id=workspace_id,
        name=name,
        role=role,
        key_prefix=prefix,
        key_hash=digest,
    )
    session.add(row)
    return row, key


def create_workspace(*, session: Session, name: str) -> tuple[Workspace, ApiKey, str]:
    """A workspace with its first admin key."""
    workspace = Workspace(id=new_id("ws"), name=name)
    session.add(workspace)
    session.flush()
    key_row, key = create_api_key(
        session=session, workspace_id=workspace.id, name=f"{name} admin", role="admin"
    )
    session.commit()
    return workspace, key_row, key


def list_api_keys(*, session: Session, workspace_id: str) -> list[ApiKey]:
    """The workspace's keys, oldest first."""
    query = select(ApiKey).where(ApiKey.workspace_id == workspace_id).order_by(ApiKey.id)
    return list(session.exec(query))


def delete_api_key(*, session: Session, workspace_id: str, key_id: str) -> None:
    """Revoke a key at once."""
    row = get_owned(session, ApiKey, key_id, workspace_id, what="API key")
    session.delete(row)
    session.commit()


def get_workspace(*, session: Session, workspace_id: str) -> Workspace:
    """The workspace row."""
    workspace = session.get(Workspace, workspace_id)
    if workspace is None:
        raise NotFound("Workspace not found.")
    return workspace
