"""Migration 0003 (audit, KV, approvals, dry runs) on a database with runs and items in it."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command

from app import migrate
from tests.app.test_migrations import _fill_release_one, _normalise, empty_database  # noqa: F401


def _columns(conn: sa.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def test_upgrade_to_0003_keeps_runs_and_items_and_downgrades(empty_database):  # noqa: F811
    migrate.upgrade(empty_database, "0002")
    _fill_release_one(empty_database)
    engine = sa.create_engine(_normalise(empty_database))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO run_items (run_id, seq, entity_id, status, attempts, next_step)"
                " VALUES ('run_a', 0, 'ent_1', 'completed', 1, 1)"
            )
        )
    engine.dispose()

    migrate.upgrade(empty_database, "0003")

    engine = sa.create_engine(_normalise(empty_database))
    with engine.begin() as conn:
        runs = conn.execute(sa.text("SELECT id, dry_run FROM runs ORDER BY id")).all()
        assert [(r[0], bool(r[1])) for r in runs] == [
            ("run_a", False),
            ("run_b", False),
            ("run_c", False),
        ]
        item = conn.execute(sa.text("SELECT status, changes FROM run_items")).one()
        assert item == ("completed", None)
        assert {"id", "action", "resource_type", "details"} <= _columns(conn, "audit_entries")
        conn.execute(
            sa.text(
                "INSERT INTO kv_entries (workspace_id, namespace, key, value, version, updated_at)"
                " VALUES ('ws_1', 'ns', 'k', :v, 1, 1)"
            ),
            {"v": json.dumps({"n": 1})},
        )
        conn.execute(
            sa.text(
                "INSERT INTO approvals (id, workspace_id, run_id, workflow_id, step_id,"
                " entity_id, item_seq, status, on_timeout, on_reject, created_at)"
                " VALUES ('apr_1', 'ws_1', 'run_a', 'wf_1', 'review', 'ent_1', 0, 'pending',"
                " 'reject', 'fail', 1)"
            )
        )
        # One approval per (run, item, gate): a re-opened gate cannot add a second.
        try:
            with conn.begin_nested():
                conn.execute(
                    sa.text(
                        "INSERT INTO approvals (id, workspace_id, run_id, workflow_id, step_id,"
                        " entity_id, item_seq, status, on_timeout, on_reject, created_at)"
                        " VALUES ('apr_2', 'ws_1', 'run_a', 'wf_1', 'review', 'ent_1', 0,"
                        " 'pending', 'reject', 'fail', 1)"
                    )
                )
            raise AssertionError("a second approval for one gate was accepted")
        except sa.exc.IntegrityError:
            pass
    engine.dispose()

    command.downgrade(migrate.alembic_config(empty_database), "0002")
    engine = sa.create_engine(_normalise(empty_database))
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        assert not {"audit_entries", "kv_entries", "approvals"} & tables
        assert "dry_run" not in _columns(conn, "runs")
        assert "changes" not in _columns(conn, "run_items")
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 3
    engine.dispose()
    migrate.upgrade(empty_database)
