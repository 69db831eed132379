"""Issue 10 item 17: ``conveyor demo`` over the bulk cap, its progress bar, and the logs
of ``conveyor scheduler`` (a start line and what it does, at INFO)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update
from sqlmodel import Session

from app import configure_logging
from app.cli import main
from app.db import dispose_engines
from app.ids import now_ms
from app.models import Run, Trigger, Workflow
from app.services import entities as entities_service
from app.services.runs import start_run
from app.watch import watch_run
from tests.conftest import RecordingQueue, make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import STEPS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo_database(tmp_path):
    yield tmp_path / "demo.db"
    dispose_engines()


def test_demo_creates_more_entities_than_one_bulk_call_takes(demo_database, monkeypatch):
    # The cap is 10,000; a small cap makes the same path cheap to exercise.
    monkeypatch.setattr(entities_service, "MAX_BULK", 10)
    env = {"DATABASE_URL": f"sqlite:///{demo_database}", "REDIS_URL": ""}

    result = CliRunner().invoke(main, ["demo", "--entities", "25"], env=env)

    assert result.exit_code == 0, result.output
    assert "over 25 entities" in result.output
    assert "completed: 25 completed, 0 failed, 0 cancelled of 25" in result.output


def test_progress_bar_prints_counts_in_full(app, client, keys, session, capsys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    run = start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow["id"]),
        entity_ids=[entities[0]["id"]],
    )
    now = now_ms()
    session.execute(
        update(Run)
        .where(Run.id == run.id)
        .values(status="completed", total=20000, completed=19600, failed=400, completed_at=now)
    )
    session.commit()

    watch_run(app.extensions["conveyor.engine"], run.id, interval=0.01)

    bar = capsys.readouterr().err
    assert "completed=19600" in bar and "failed=400" in bar
    assert "e+" not in bar  # tqdm's short number format ("2e+4")


def test_configure_logging_logs_info_to_stderr_of_a_bare_process():
    code = (
        "import logging; from app import configure_logging; configure_logging(); "
        "logging.getLogger('conveyor.test').info('hello from a process')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert "INFO conveyor.test hello from a process" in done.stderr


def test_configure_logging_honours_conveyor_log_level(monkeypatch):
    root = logging.getLogger()
    before = root.level
    try:
        monkeypatch.setenv("CONVEYOR_LOG_LEVEL", "warning")
        configure_logging()
        assert root.level == logging.WARNING
    finally:
        root.setLevel(before)


def test_scheduler_process_logs_its_start_and_each_trigger_it_fires(
    client, keys, settings, session
):
    if not settings.database_url.startswith("sqlite"):
        pytest.skip("the scheduler process shares the test's SQLite file")
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 1)
    steps = [{"id": "tidy", "type": "transform", "config": {"set": {"seen": True}}}]
    workflow = make_workflow(client, keys, entity_type["id"], steps, status="active")
    created = client.post(
        "/api/v1/triggers",
        json={"workflowId": workflow["id"], "type": "cron", "cron": "* * * * *"},
        headers=keys.header("editor"),
    )
    assert created.status_code == 201, created.json
    # Due a second ago: the scheduler's first tick fires it.
    session.execute(
        update(Trigger).where(Trigger.id == created.json["id"]).values(next_run_at=now_ms() - 1000)
    )
    session.commit()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": "",
        "CONVEYOR_SECRET_KEY": settings.secret_keys[0],
    }
    env.pop("CONVEYOR_LOG_LEVEL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "scheduler", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(" fired " in line for line in lines):
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)
        reader.join(timeout=10)
    output = "".join(lines)
    assert "INFO conveyor.scheduler conveyor scheduler starting" in output, output
    assert f"trigger {created.json['id']} fired for" in output, output
    assert ": run run_" in output, output
    with Session(session.get_bind()) as fresh:
        assert fresh.query(Run).count() == 1
