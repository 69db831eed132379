"""``jobs.bulk.bulk_update``: many rows, each with its own values, in one statement.

The same cases run on SQLite (one UPDATE per row) and, when CONVEYOR_TEST_DATABASE_URL
names a PostgreSQL database, on its ``jsonb_to_recordset`` path, against a table of
the test's own."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    select,
)
from sqlalchemy.dialects.postgresql import JSONB

from jobs.bulk import bulk_update
from tests.conftest import PG_URL

DIALECTS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not PG_URL, reason="needs CONVEYOR_TEST_DATABASE_URL"),
    ),
]


@pytest.fixture(params=DIALECTS)
def items(request, tmp_path):
    """A table like run_items (text and integer keys, JSON, boolean), with four rows."""
    url = PG_URL if request.param == "postgresql" else f"sqlite:///{tmp_path / 'bulk.db'}"
    engine = create_engine(url)
    metadata = MetaData()
    table = Table(
        f"bulk_test_{uuid.uuid4().hex[:12]}",
        metadata,
        Column("run_id", String(40), primary_key=True),
        Column("seq", BigInteger, primary_key=True),
        Column("status", String(20)),
        Column("attempts", BigInteger),
        Column("done", Boolean),
        Column("state", JSON().with_variant(JSONB(), "postgresql")),
    )
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            table.insert(),
            [
                {"run_id": run, "seq": seq, "status": "pending", "attempts": 0, "done": False}
                for run in ("run_a", "run_b")
                for seq in (1, 2)
            ],
        )
    try:
        yield engine, table
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def _rows(engine, table):
    with engine.connect() as connection:
        rows = connection.execute(select(table).order_by(table.c.run_id, table.c.seq)).all()
    return [tuple(row) for row in rows]


def test_each_row_gets_its_own_values_and_the_matched_keys_come_back(items):
    engine, table = items
    with engine.begin() as connection:
        updated = bulk_update(
            connection,
            table,
            keys=[{"seq": 1}, {"seq": 2}, {"seq": 99}],
            values=[
                {"status": "completed", "attempts": 1, "done": True, "state": {"steps": ["a"]}},
                {"status": "failed", "attempts": 3, "done": False, "state": None},
                {"status": "completed", "attempts": 1, "done": True, "state": {}},
            ],
            fixed={"run_id": "run_a"},
            returning="seq",
        )
    assert sorted(updated) == [1, 2]  # seq 99 matched no row
    assert _rows(engine, table) == [
        ("run_a", 1, "completed", 1, True, {"steps": ["a"]}),
        ("run_a", 2, "failed", 3, False, None),
        ("run_b", 1, "pending", 0, False, None),  # the fixed condition kept run_b out
        ("run_b", 2, "pending", 0, False, None),
    ]


def test_composite_keys_without_fixed_conditions(items):
    engine, table = items
    with engine.begin() as connection:
        updated = bulk_update(
            connection,
            table,
            keys=[{"run_id": "run_b", "seq": 2}, {"run_id": "run_a", "seq": 1}],
            values=[{"attempts": 7}, {"attempts": 5}],
            returning="run_id",
        )
    assert sorted(updated) == ["run_a", "run_b"]
    assert [(row[0], row[1], row[3]) for row in _rows(engine, table)] == [
        ("run_a", 1, 5),
        ("run_a", 2, 0),
        ("run_b", 1, 0),
        ("run_b", 2, 7),
    ]


def test_nested_json_and_quotes_travel_intact(items):
    engine, table = items
    state = {"data": {"title": 'O\'Brien "quoted" ünïcode', "n": [1, 2.5, None, True]}}
    with engine.begin() as connection:
        bulk_update(
            connection,
            table,
            keys=[{"run_id": "run_a", "seq": 2}],
            values=[{"state": state, "status": "it's done"}],
            returning="seq",
        )
    row = _rows(engine, table)[1]
    assert row[5] == state and row[2] == "it's done"


def test_no_keys_is_no_statement(items):
    engine, table = items
    with engine.begin() as connection:
        assert bulk_update(connection, table, [], [], returning="seq") == []
    assert {row[2] for row in _rows(engine, table)} == {"pending"}
