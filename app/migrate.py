"""Alembic migrations, run from code (``conveyor db upgrade`` and the embedded default)."""

from __future__ import annotations

import functools
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, request
from sqlalchemy.engine import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_lock = threading.Lock()


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at our migrations and ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database schema up to ``revision``."""
    with _lock:
        command.upgrade(alembic_config(database_url), revision)


UPGRADE_HINT = "run `conveyor db upgrade`"
# The health checks report the schema themselves (``/readyz``) or need no database.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@functools.cache
def _script() -> ScriptDirectory:
    """The migration scripts (read once per process)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def schema_problem(engine: Engine) -> str | None:
    """None when the database schema is at the code's head revision, else why not and what
    to do. Database errors propagate: "not reachable" is another problem."""
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    expected = set(_script().get_heads())
    if current == expected:
        return None
    if not current:
        return f"The database has no Conveyor schema: {UPGRADE_HINT}."
    at = ", ".join(sorted(current))
    if current - {script.revision for script in _script().walk_revisions()}:
        return (
            f"The database schema is at revision {at}, which this version of Conveyor does "
            "not know: a newer version migrated it; deploy that version."
        )
    head = ", ".join(sorted(expected))
    return f"The database schema is at revision {at}, not {head}: {UPGRADE_HINT}."


class SchemaCheck:
    """Remembers once the schema was found at head (it only moves forward while serving):
    until then every call looks again, so an upgrade run meanwhile is noticed at once."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.at_head = False

    def problem(self) -> str | None:
        """None when at head, else the reason (see :func:`schema_problem`)."""
        if self.at_head:
            return None
        found = schema_problem(self.engine)
        self.at_head = found is None
        return found


def init_app(app: Flask) -> None:
    """Answer every request but the health checks with a 503 until the schema is at head."""
    from app.errors import ServiceUnavailable

    check = SchemaCheck(app.extensions["conveyor.engine"])
    app.extensions["conveyor.schema_check"] = check

    @app.before_request
    def _schema_at_head() -> None:
        if request.path in EXEMPT_PATHS:
            return
        found = check.problem()
        if found:
            raise ServiceUnavailable(found, {"database": [found]})
