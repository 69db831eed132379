"""Alembic migrations: an upgrade from 0001 with data in it, on SQLite and on PostgreSQL.

A database made by the first release holds a workflow at version 3 and runs that pinned
versions 2 and 3. Upgrading it to head must keep every row and give the workflow its
revisions: one from the workflow row (version 3) and one from the run that pinned
version 2 (the run row kept that version's steps and settings).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlmodel import Session

from app import create_app, migrate
from app.config import Settings
from app.db import dispose_engines
from app.models import JSONType
from app.services.workspaces import create_api_key
from tests.conftest import PG_URL, _normalise, auth

V2_STEPS = [{"id": "mark", "type": "transform", "name": None, "config": {"set": {"v": 2}}}]
V3_STEPS = [
    {"id": "mark", "type": "transform", "name": None, "config": {"set": {"v": 3}}},
    {"id": "ship", "type": "publish", "name": "Ship", "config": {}},
]
SETTINGS = {
    "concurrency": 5,
    "tolerated_failure_percentage": 0,
    "retry": {"max_attempts": 1, "backoff_seconds": 1.0},
    "entity_timeout_seconds": 300,
    "notify_on_finish": None,
}

_meta = sa.MetaData()
_workspaces = sa.Table(
    "workspaces",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("name", sa.String),
    sa.Column("created_at", sa.BigInteger),
)
_entity_types = sa.Table(
    "entity_types",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("workspace_id", sa.String),
    sa.Column("name", sa.String),
    sa.Column("schema", JSONType),
    sa.Column("created_at", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger),
)
_workflows = sa.Table(
    "workflows",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("workspace_id", sa.String),
    sa.Column("entity_type_id", sa.String),
    sa.Column("name", sa.String),
    sa.Column("description", sa.String),
    sa.Column("status", sa.String),
    sa.Column("steps", JSONType),
    sa.Column("settings", JSONType),
    sa.Column("version", sa.Integer),
    sa.Column("created_at", sa.BigInteger),
    sa.Column("updated_at", sa.BigInteger),
)
_runs = sa.Table(
    "runs",
    _meta,
    sa.Column("id", sa.String),
    sa.Column("workspace_id", sa.String),
    sa.Column("workflow_id", sa.String),
    sa.Column("workflow_version", sa.Integer),
    sa.Column("job_id", sa.String),
    sa.Column("status", sa.String),
    sa.Column("total", sa.Integer),
    sa.Column("completed", sa.Integer),
    sa.Column("failed", sa.Integer),
    sa.Column("cancelled", sa.Integer),
    sa.Column("trigger_type", sa.String),
    sa.Column("steps", JSONType),
    sa.Column("settings", JSONType),
    sa.Column("input_tokens", sa.BigInteger),
    sa.Column("output_tokens", sa.BigInteger),
    sa.Column("cancel_requested", sa.Boolean),
    sa.Column("created_at", sa.BigInteger),
)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL: a SQLite file, or a PostgreSQL database of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        dispose_engines()
        return
    if not PG_URL:
        pytest.skip("CONVEYOR_TEST_DATABASE_URL is not set")
    base = make_url(_normalise(PG_URL))
    name = f"conveyor_migrations_{os.getpid()}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _run_row(run_id: str, version: int, steps: list[dict[str, Any]], at: int) -> dict[str, Any]:
    return {
        "id": run_id,
        "workspace_id": "ws_1",
        "workflow_id": "wf_1",
        "workflow_version": version,
        "job_id": f"job_{run_id}",
        "status": "completed",
        "total": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "trigger_type": "manual",
        "steps": steps,
        "settings": SETTINGS,
        "input_tokens": 0,
        "output_tokens": 0,
        "cancel_requested": False,
        "created_at": at,
    }


def _fill_release_one(url: str) -> None:
    """Rows as the first release wrote them: a workflow at version 3, runs of v2 and v3."""
    engine = sa.create_engine(_normalise(url))
    with engine.begin() as conn:
        conn.execute(_workspaces.insert(), [{"id": "ws_1", "name": "Acme", "created_at": 1}])
        conn.execute(
            _entity_types.insert(),
            [
                {
                    "id": "et_1",
                    "workspace_id": "ws_1",
                    "name": "Product",
                    "schema": {"type": "object"},
                    "created_at": 1,
                    "updated_at": 1,
                }
            ],
        )
        conn.execute(
            _workflows.insert(),
            [
                {
                    "id": "wf_1",
                    "workspace_id": "ws_1",
                    "entity_type_id": "et_1",
                    "name": "Descriptions",
                    "description": "old",
                    "status": "active",
                    "steps": V3_STEPS,
                    "settings": SETTINGS,
                    "version": 3,
                    "created_at": 100,
                    "updated_at": 300,
                }
            ],
        )
        conn.execute(
            _runs.insert(),
            [
                _run_row("run_a", 2, V2_STEPS, 200),
                _run_row("run_b", 2, V2_STEPS, 250),
                _run_row("run_c", 3, V3_STEPS, 310),
            ],
        )
    engine.dispose()


def test_upgrade_from_0001_backfills_a_revision_per_workflow_and_pinned_version(empty_database):
    migrate.upgrade(empty_database, "0001")
    _fill_release_one(empty_database)

    migrate.upgrade(empty_database)

    engine = sa.create_engine(_normalise(empty_database))
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        head = ScriptDirectory.from_config(migrate.alembic_config(empty_database))
        assert version == head.get_current_head()
        revisions = conn.execute(
            sa.text(
                "SELECT workflow_id, version, snapshot, changes, actor_key_id, created_at "
                "FROM workflow_revisions ORDER BY version"
            )
        ).all()
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 3
        assert conn.execute(sa.text("SELECT version FROM workflows")).scalar_one() == 3
    engine.dispose()

    def as_json(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    assert [(r[0], r[1]) for r in revisions] == [("wf_1", 2), ("wf_1", 3)]
    v2, v3 = (as_json(r[2]) for r in revisions)
    assert v3 == {
        "name": "Descriptions",
        "description": "old",
        "status": "active",
        "entity_type_id": "et_1",
        "steps": V3_STEPS,
        "settings": SETTINGS,
    }
    assert v2 == {**v3, "steps": V2_STEPS}
    assert as_json(revisions[1][3]) == [
        "name",
        "description",
        "status",
        "entityTypeId",
        "steps",
        "settings",
    ]
    assert as_json(revisions[0][3]) == ["steps", "settings"]
    assert revisions[0][4] is None and revisions[1][4] is None
    # The earliest run of version 2 dates it; the workflow's last update dates version 3.
    assert (revisions[0][5], revisions[1][5]) == (200, 300)

    # Through the API: every run's workflowVersion resolves, and the next save is version 4.
    app = create_app(
        {
            "CONVEYOR": Settings(
                database_url=empty_database,
                redis_url=None,
                secret_keys=("test-secret-key-0123456789abcdef",),
            ),
            "AUTO_MIGRATE": False,
            "TESTING": True,
            "EMBEDDED_SCHEDULER": False,
        }
    )
    try:
        with Session(app.extensions["conveyor.engine"]) as session:
            _, key = create_api_key(
                session=session, workspace_id="ws_1", name="editor", role="editor"
            )
            session.commit()
        client = app.test_client()
        runs = client.get("/api/v1/workflows/wf_1/runs", headers=auth(key)).json
        assert sorted(r["workflowVersion"] for r in runs) == [2, 2, 3]
        for run in runs:
            revision = client.get(
                f"/api/v1/workflows/wf_1/revisions/{run['workflowVersion']}", headers=auth(key)
            )
            assert revision.status_code == 200
            assert [s["id"] for s in revision.json["steps"]] == [
                s["id"] for s in (V2_STEPS if run["workflowVersion"] == 2 else V3_STEPS)
            ]
        patched = client.patch("/api/v1/workflows/wf_1", json={"name": "New"}, headers=auth(key))
        assert patched.status_code == 200 and patched.json["version"] == 4
        listed = client.get("/api/v1/workflows/wf_1/revisions", headers=auth(key)).json
        assert [r["version"] for r in listed] == [4, 3, 2]
        assert listed[0]["changes"] == ["name"]
        diff = client.get("/api/v1/workflows/wf_1/revisions/3/diff", headers=auth(key)).json
        assert {"op": "add", "path": "/steps/1", "value": V3_STEPS[1]} in diff
    finally:
        from app import queue

        queue.shutdown_app(app)
