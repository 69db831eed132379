"""What a background task runs against: settings, database engine and task queue.

The web app installs one for its process (``app.queue.init_app``), as do ``conveyor worker``
and ``conveyor scheduler``; the embedded worker threads install theirs per thread. Job
functions reach it through :func:`current` (re-exported as ``jobs.runtime``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.config import Settings
from app.db import get_engine

if TYPE_CHECKING:
    from app.queue import TaskQueue


@dataclass
class Runtime:
    """Settings, engine and queue shared by the job functions of one process or thread."""

    settings: Settings
    engine: Engine
    queue: TaskQueue

    def session(self) -> Session:
        """A new session on the runtime's database."""
        return Session(self.engine, expire_on_commit=False)


_local = threading.local()
_global: Runtime | None = None


def install(runtime: Runtime, *, thread_only: bool = False) -> None:
    """Make ``runtime`` current for this thread, or for the whole process."""
    global _global
    if thread_only:
        _local.runtime = runtime
    else:
        _global = runtime


def current() -> Runtime:
    """The runtime of this thread, else of this process (built from the environment)."""
    runtime = getattr(_local, "runtime", None) or _global
    if runtime is None:
        from app.queue import queue_for

        settings = Settings.from_env()
        runtime = Runtime(settings, get_engine(settings.database_url), queue_for(settings))
        install(runtime)
    return runtime
