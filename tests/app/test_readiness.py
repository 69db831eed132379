"""A database whose schema is not at this version's head (issue 10 item 14): ``/readyz`` is
503, every API call is a 503 in the error shape saying "run `conveyor db upgrade`", and
``conveyor db check`` says the same; an upgrade run meanwhile is noticed without a restart.

On PostgreSQL (``CONVEYOR_TEST_DATABASE_URL``) each test gets an empty database of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app, migrate
from app.cli import main
from app.config import Settings
from app.db import dispose_engines
from tests.app.api import assert_error
from tests.conftest import PG_URL, _normalise

FIRST_REVISION = "0001"


@pytest.fixture
def empty_url(tmp_path: Path) -> Iterator[str]:
    """A database that exists but was never migrated."""
    if PG_URL is None:
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        dispose_engines()
        return
    base = make_url(_normalise(PG_URL))
    name = f"conveyor_unmigrated_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.set(database=name).render_as_string(hide_password=False)
    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def unmigrated_app(empty_url: str) -> Iterator[Flask]:
    application = create_app(
        {
            "CONVEYOR": Settings(database_url=empty_url, redis_url=None),
            "AUTO_MIGRATE": False,
            "TESTING": True,
            "EMBEDDED_SCHEDULER": False,
            "EMBEDDED_SWEEPER": False,
        }
    )
    yield application
    task_queue = application.extensions.get("conveyor.queue")
    if hasattr(task_queue, "shutdown"):  # the embedded queue's worker threads
        task_queue.shutdown()


def _assert_upgrade_503(response) -> dict:
    body = assert_error(response, 503)
    assert "run `conveyor db upgrade`" in body["message"], body
    assert response.headers["Retry-After"]
    return body


def test_a_never_migrated_database_is_not_ready_and_the_api_says_what_to_do(unmigrated_app):
    client = unmigrated_app.test_client()

    ready = client.get("/readyz")
    _assert_upgrade_503(ready)
    assert "no Conveyor schema" in ready.json["message"]

    for response in (
        client.get("/api/v1/me", headers={"Authorization": "Bearer cvk_anything"}),
        client.get("/api/v1/workflows"),
        client.post("/api/v1/entity-types", json={"name": "x", "schema": {}}),
    ):
        _assert_upgrade_503(response)
    assert client.get("/healthz").status_code == 200  # the process itself is fine


def test_the_app_notices_an_upgrade_without_a_restart(unmigrated_app, empty_url):
    client = unmigrated_app.test_client()
    _assert_upgrade_503(client.get("/readyz"))

    migrate.upgrade(empty_url)

    assert client.get("/readyz").status_code == 200
    assert_error(client.get("/api/v1/me"), 401)  # through to the API: no key


def test_a_schema_behind_head_names_both_revisions(unmigrated_app, empty_url):
    migrate.upgrade(empty_url, FIRST_REVISION)
    client = unmigrated_app.test_client()

    body = _assert_upgrade_503(client.get("/api/v1/workflows"))
    assert f"at revision {FIRST_REVISION}" in body["message"]
    assert "not 0" in body["message"]
    _assert_upgrade_503(client.get("/readyz"))


def test_db_check_says_what_to_do_then_passes_after_db_upgrade(empty_url):
    env = {"DATABASE_URL": empty_url, "REDIS_URL": ""}
    if empty_url.startswith("sqlite"):
        # An existing file without tables, like the PostgreSQL database.
        create_engine(empty_url).connect().close()
    runner = CliRunner()

    before = runner.invoke(main, ["db", "check"], env=env)
    assert before.exit_code == 1
    assert "run `conveyor db upgrade`" in before.output

    upgraded = runner.invoke(main, ["db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    after = runner.invoke(main, ["db", "check"], env=env)
    assert after.exit_code == 0, after.output
    assert "at head" in after.output


def test_db_check_on_a_missing_sqlite_file_does_not_create_it(tmp_path):
    path = tmp_path / "nowhere.db"
    result = CliRunner().invoke(
        main, ["db", "check"], env={"DATABASE_URL": f"sqlite:///{path}", "REDIS_URL": ""}
    )
    assert result.exit_code == 1
    assert "run `conveyor db upgrade`" in result.output
    assert not path.exists()
