"""``conveyor`` commands over HTTP against a live Conveyor, and the database-direct
commands refusing a database that is not migrated (instead of creating one)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conveyor_client import Conveyor

from app.cli import main
from app.db import dispose_engines
from tests.conftest import PRODUCT_SCHEMA, Keys


def _env(live_url: str, key: str) -> dict[str, str | None]:
    return {"CONVEYOR_URL": live_url, "CONVEYOR_API_KEY": key, "DATABASE_URL": None}


@pytest.fixture
def workflow(live_url: str, keys: Keys) -> dict[str, str]:
    with Conveyor(live_url, keys.editor) as conveyor:
        product = conveyor.entity_types.create(name="Product", schema=PRODUCT_SCHEMA)
        conveyor.entities.bulk_create(
            [{"entityTypeId": product["id"], "data": {"title": f"P{i}"}} for i in range(12)]
        )
        created = conveyor.workflows.create(
            name="Mark",
            entity_type_id=product["id"],
            steps=[{"id": "mark", "type": "transform", "config": {"status": "marked"}}],
        )
    return {"id": created["id"], "entity_type_id": product["id"]}


def test_runs_start_and_watch_through_the_server(
    live_url: str,
    keys: Keys,
    workflow: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a directory without any database
    runner = CliRunner()
    started = runner.invoke(
        main,
        ["runs", "start", workflow["id"], "--status", "draft"],
        env=_env(live_url, keys.editor),
    )
    assert started.exit_code == 0, started.output
    assert "12 completed, 0 failed, 0 cancelled of 12" in started.stdout
    run_id = started.stderr.split()[1]
    watched = runner.invoke(main, ["runs", "watch", run_id], env=_env(live_url, keys.viewer))
    assert watched.exit_code == 0, watched.output
    assert f"run {run_id} completed: 12 completed" in watched.stdout
    flags = runner.invoke(
        main,
        ["runs", "watch", run_id, "--workflow", workflow["id"], "--url", live_url],
        env={"CONVEYOR_API_KEY": keys.viewer, "CONVEYOR_URL": None},
    )
    assert flags.exit_code == 0, flags.output
    assert not list(elsewhere.iterdir())  # no conveyor.db left behind


def test_runs_start_reports_the_error_shape(
    live_url: str, keys: Keys, workflow: dict[str, str]
) -> None:
    result = CliRunner().invoke(
        main, ["runs", "start", workflow["id"], "ent_unknown"], env=_env(live_url, keys.editor)
    )
    assert result.exit_code == 1
    assert "422" in result.output and "entityIds" in result.output
    viewer = CliRunner().invoke(
        main, ["runs", "start", workflow["id"], "--all"], env=_env(live_url, keys.viewer)
    )
    assert viewer.exit_code == 1 and "403" in viewer.output


def test_workflows_export_import_validate(
    live_url: str, keys: Keys, workflow: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    path = tmp_path / "mark.yaml"
    exported = runner.invoke(
        main,
        ["workflows", "export", workflow["id"], "-o", str(path)],
        env=_env(live_url, keys.viewer),
    )
    assert exported.exit_code == 0, exported.output
    assert "kind: Workflow" in path.read_text()
    valid = runner.invoke(
        main, ["workflows", "validate", str(path)], env=_env(live_url, keys.viewer)
    )
    assert valid.exit_code == 0, valid.output
    assert valid.stdout.strip() == "valid"
    imported = runner.invoke(
        main, ["workflows", "import", str(path)], env=_env(live_url, keys.other_admin)
    )
    assert imported.exit_code == 0, imported.output
    new_id = imported.stdout.strip()
    with Conveyor(live_url, keys.other_admin) as other:
        assert other.workflows.get(new_id)["name"] == "Mark"
        assert other.workflows.export(new_id) == Conveyor(live_url, keys.viewer).workflows.export(
            workflow["id"]
        )
    broken = tmp_path / "broken.yaml"
    broken.write_text(path.read_text().replace("type: transform", "type: teleport"))
    invalid = runner.invoke(
        main, ["workflows", "validate", str(broken)], env=_env(live_url, keys.viewer)
    )
    assert invalid.exit_code == 1
    assert "steps[0].type" in invalid.stderr
    as_json = runner.invoke(
        main,
        ["workflows", "export", workflow["id"], "--format", "json"],
        env=_env(live_url, keys.viewer),
    )
    assert as_json.exit_code == 0 and '"kind": "Workflow"' in as_json.stdout


def test_remote_commands_need_both_url_and_key(live_url: str) -> None:
    result = CliRunner().invoke(
        main,
        ["workflows", "export", "wf_1"],
        env={"CONVEYOR_URL": live_url, "CONVEYOR_API_KEY": None},
    )
    assert result.exit_code == 2
    assert "CONVEYOR_API_KEY" in result.output
    none = CliRunner().invoke(
        main,
        ["runs", "start", "wf_1", "--all"],
        env={"CONVEYOR_URL": None, "CONVEYOR_API_KEY": None},
    )
    assert none.exit_code == 2 and "CONVEYOR_URL" in none.output


def test_database_commands_refuse_a_database_that_is_not_migrated(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": None,
        "CONVEYOR_HOME": str(tmp_path),
        "REDIS_URL": None,
        "CONVEYOR_URL": None,
        "CONVEYOR_API_KEY": None,
    }
    runner = CliRunner()
    try:
        created = runner.invoke(main, ["workspaces", "create", "Lost"], env=env)
        watched = runner.invoke(main, ["runs", "watch", "run_1"], env=env)
        (tmp_path / "empty.db").write_bytes(b"")
        empty = runner.invoke(
            main,
            ["workspaces", "create", "X"],
            env={**env, "DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"},
        )
    finally:
        dispose_engines()
    for result in (created, watched):
        assert result.exit_code == 1
        assert "there is no database file at" in result.output
        assert "conveyor db upgrade" in result.output
        assert "Traceback" not in result.output
    assert empty.exit_code == 1 and "not a migrated Conveyor database" in empty.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]  # nothing created
