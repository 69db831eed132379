"""The ``conveyor`` command line: ``workspaces create`` and ``db upgrade``."""

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from app import create_app, migrate, queue
from app.cli import main
from app.config import Settings
from app.db import dispose_engines, get_engine


@pytest.fixture
def database_file(tmp_path):
    """A temporary SQLite file for the CLI; its engines are closed afterwards."""
    yield tmp_path / "cli.db"
    dispose_engines()


def _env(database_file):
    return {"DATABASE_URL": f"sqlite:///{database_file}", "REDIS_URL": ""}


def _migrated(database_file):
    """``workspaces create`` refuses a database that is not migrated: migrate it first."""
    migrate.upgrade(f"sqlite:///{database_file}")


def test_workspaces_create_prints_a_key_that_authenticates(database_file):
    _migrated(database_file)
    result = CliRunner().invoke(main, ["workspaces", "create", "Acme"], env=_env(database_file))
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("cvk_") and "\n" not in key
    assert "Acme" in result.stderr and "not shown again" in result.stderr

    app = create_app(
        {"CONVEYOR": Settings(database_url=f"sqlite:///{database_file}", redis_url=None)}
    )
    try:
        me = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200
        assert me.json["workspace"]["name"] == "Acme"
        assert me.json["key"]["role"] == "admin"
        assert key.startswith(me.json["key"]["keyPrefix"])
    finally:
        queue.shutdown_app(app)


def test_each_workspace_gets_its_own_key(database_file):
    _migrated(database_file)
    runner = CliRunner()
    first = runner.invoke(main, ["workspaces", "create", "One"], env=_env(database_file))
    second = runner.invoke(main, ["workspaces", "create", "Two"], env=_env(database_file))
    assert first.exit_code == second.exit_code == 0
    assert first.stdout.strip() != second.stdout.strip()


def test_workspaces_create_needs_a_name(database_file):
    result = CliRunner().invoke(main, ["workspaces", "create"], env=_env(database_file))
    assert result.exit_code != 0
    assert "NAME" in result.output


def test_db_upgrade_creates_the_schema(database_file):
    runner = CliRunner()
    result = runner.invoke(main, ["db", "upgrade"], env=_env(database_file))
    assert result.exit_code == 0, result.output
    assert "head" in result.output
    tables = set(inspect(get_engine(f"sqlite:///{database_file}")).get_table_names())
    assert {"workspaces", "api_keys", "entity_types", "entities", "workflows", "runs"} <= tables
    assert "alembic_version" in tables
    again = runner.invoke(main, ["db", "upgrade"], env=_env(database_file))
    assert again.exit_code == 0, again.output


def test_the_embedded_default_keeps_its_database_in_conveyor_home(tmp_path):
    env = {"DATABASE_URL": None, "REDIS_URL": None, "CONVEYOR_HOME": str(tmp_path)}
    try:
        assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0
        result = CliRunner().invoke(main, ["workspaces", "create", "Home"], env=env)
    finally:
        dispose_engines()
    assert result.exit_code == 0, result.output
    assert (tmp_path / "conveyor.db").is_file()
