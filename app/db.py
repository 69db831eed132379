"""Database engine and sessions, shared by the web app and the job workers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, g
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, create_engine

from app.errors import Conflict

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL and a busy timeout let worker threads and the web share one SQLite file."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    """Take SQLite's write lock at BEGIN so read-then-write transactions cannot deadlock."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine(url: str) -> Engine:
    """One engine per database URL per process."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(
                    url,
                    connect_args={"check_same_thread": False, "timeout": 30},
                    pool_size=10,
                    max_overflow=20,
                )
                event.listen(engine, "connect", _sqlite_pragmas)
                # pysqlite's own transaction handling is off; we emit BEGIN ourselves.
                event.listen(
                    engine,
                    "connect",
                    lambda c, _r: setattr(c, "isolation_level", None),
                )
                event.listen(engine, "begin", _sqlite_begin_immediate)
            else:
                engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (after fork, or at the end of tests)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def init_app(app: Flask) -> None:
    """Give each request a session on the app's database."""
    app.extensions["conveyor.engine"] = get_engine(app.config["CONVEYOR"].database_url)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def db_session() -> Session:
    """The current request's session."""
    from flask import current_app

    if "db_session" not in g:
        g.db_session = Session(current_app.extensions["conveyor.engine"], expire_on_commit=False)
    return g.db_session


@contextmanager
def conflict_on_integrity_error(message: str) -> Iterator[None]:
    """Turn a unique or foreign-key violation into a 409 with ``message``."""
    try:
        yield
    except IntegrityError as exc:
        raise Conflict(message) from exc
