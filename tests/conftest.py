"""Shared fixtures: an app on a fresh database, API keys of each role, factories.

Set ``CONVEYOR_TEST_DATABASE_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``)
to run the suite against PostgreSQL instead of a temporary SQLite file.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel

from app import create_app, migrate
from app.config import Settings
from app.db import dispose_engines, get_engine
from app.services.workspaces import create_api_key, create_workspace

PG_URL = os.environ.get("CONVEYOR_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _normalise(url: str) -> str:
    """``postgresql://`` → the psycopg 3 driver URL SQLAlchemy needs."""
    if url.startswith("postgres"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database: a SQLite file to copy per test, or a PostgreSQL database.

    On PostgreSQL each pytest process creates its own database next to the one named by
    ``CONVEYOR_TEST_DATABASE_URL`` and drops it at the end, so concurrent runs never meet.
    """
    if PG_URL:
        base = make_url(_normalise(PG_URL))
        name = f"conveyor_test_{os.getpid()}"
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
        dispose_engines()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        return
    path = tmp_path_factory.mktemp("template") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    yield str(path)


@pytest.fixture
def database_url(_template_db: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    if PG_URL:
        engine = get_engine(_template_db)
        tables = ", ".join(t.name for t in SQLModel.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        yield _template_db
        return
    path = tmp_path / "conveyor.db"
    shutil.copy(_template_db, path)
    url = f"sqlite:///{path}"
    yield url
    dispose_engines()


@pytest.fixture
def settings(database_url: str) -> Settings:
    """Settings for a test: its own database, the embedded queue, a known secret key."""
    return Settings(
        database_url=database_url,
        redis_url=None,
        secret_keys=("test-secret-key-0123456789abcdef",),
        max_content_length=1024 * 1024,
    )


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    """The Conveyor app on the test database."""
    application = create_app(
        {
            "CONVEYOR": settings,
            "AUTO_MIGRATE": False,
            "TESTING": True,
            # Tests drive the scheduler with an injected clock, never a live thread.
            "EMBEDDED_SCHEDULER": False,
        }
    )
    yield application
    from app import queue

    queue.shutdown_app(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    """A database session outside any request."""
    with Session(app.extensions["conveyor.engine"], expire_on_commit=False) as s:
        yield s


class Keys:
    """A workspace and one API key per role, plus a second workspace to test isolation."""

    def __init__(self, session: Session) -> None:
        self.workspace, _, self.admin = create_workspace(session=session, name="Acme")
        self.other_workspace, _, self.other_admin = create_workspace(session=session, name="Other")
        for role in ("viewer", "executor", "editor"):
            _, key = create_api_key(
                session=session, workspace_id=self.workspace.id, name=role, role=role
            )
            setattr(self, role, key)
        session.commit()

    def header(self, role: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {getattr(self, role)}"}


@pytest.fixture
def keys(session: Session) -> Keys:
    return Keys(session)


def auth(key: str) -> dict[str, str]:
    """An Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


PRODUCT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
    },
    "required": ["title"],
}


def make_entity_type(client: FlaskClient, keys: Keys, **overrides: Any) -> dict[str, Any]:
    """Create an entity type through the API."""
    body = {"name": "Product", "schema": PRODUCT_SCHEMA, **overrides}
    response = client.post("/api/v1/entity-types", json=body, headers=keys.header("editor"))
    assert response.status_code == 201, response.json
    return response.json


def make_entities(
    client: FlaskClient, keys: Keys, entity_type_id: str, count: int, **data: Any
) -> list[dict[str, Any]]:
    """Bulk-create ``count`` entities through the API."""
    items = [
        {"entityTypeId": entity_type_id, "data": {"title": f"Item {i}", "price": i, **data}}
        for i in range(count)
    ]
    response = client.post(
        "/api/v1/entities/bulk", json={"entities": items}, headers=keys.header("editor")
    )
    assert response.status_code == 201, response.json
    return response.json


def make_workflow(
    client: FlaskClient, keys: Keys, entity_type_id: str, steps: list[dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    """Create a workflow through the API."""
    body = {"name": "Workflow", "entityTypeId": entity_type_id, "steps": steps, **kw}
    response = client.post("/api/v1/workflows", json=body, headers=keys.header("editor"))
    assert response.status_code == 201, response.json
    return response.json


class RecordingQueue:
    """A task queue that only records: runs stay ``pending`` until a test runs their jobs."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, tuple[Any, ...]]] = []

    def enqueue(self, func: str, *args: Any) -> None:
        self.tasks.append((func, args))

    def depth(self) -> int:
        return len(self.tasks)

    def workers(self) -> int:
        return 1
