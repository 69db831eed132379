"""Alembic migrations, run from code (``conveyor db upgrade`` and the embedded default)."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config

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
