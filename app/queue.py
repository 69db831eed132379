"""The queue port: where the web app sends background work, and what runs it.

``app`` never imports ``jobs``: it names a task by its dotted path (``DISPATCH_RUN``,
``PROCESS_LANE``, ...) and a queue resolves the name where the task runs. Two queues
implement the port: :class:`RQQueue` (RQ on Redis, run by ``conveyor worker`` processes)
and :class:`ThreadQueue` (worker threads in this process, the embedded default). The
embedded default also runs the sweeper and the cron scheduler in threads, started by the
dotted paths in ``EMBEDDED_LOOPS``.

Work that must see committed rows is sent with :func:`enqueue_after_commit`: it leaves
when the session commits, and is dropped if the session rolls back.
"""

from __future__ import annotations

import importlib
import logging
import queue as stdlib_queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from flask import Flask
from redis import Redis
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import Session as SQLModelSession

from app.config import Settings
from app.db import get_engine

log = logging.getLogger(__name__)

QUEUE_NAME = "conveyor"
T = TypeVar("T")

# The tasks the job side provides, by dotted path (resolved where they run).
DISPATCH_RUN = "jobs.dispatch.dispatch_run"
PROCESS_LANE = "jobs.chunks.process_lane"
NOTIFY_FINISHED = "jobs.finalize.notify_finished"
TASKS = (DISPATCH_RUN, PROCESS_LANE, NOTIFY_FINISHED)
# The embedded default's background threads: app config flag → starter(runtime) → stop event.
EMBEDDED_LOOPS = (
    ("EMBEDDED_SWEEPER", "jobs.sweeper.start_sweeper_thread"),
    ("EMBEDDED_SCHEDULER", "jobs.scheduler.start_scheduler_thread"),
)

_redis_clients: dict[str, Redis] = {}


def redis_connection(url: str) -> Redis:
    """One Redis client per URL per process."""
    client = _redis_clients.get(url)
    if client is None:
        client = Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        _redis_clients[url] = client
    return client


_shared: dict[tuple[str, str], Any] = {}
_shared_lock = threading.Lock()


def shared_per_redis(kind: str, url: str, build: Callable[[Redis], T]) -> T:
    """One ``build(client)`` per (kind, Redis URL) per process: a rate limiter, a metrics
    store; every worker process on that Redis shares what it holds."""
    with _shared_lock:
        found = _shared.get((kind, url))
        if found is None:
            found = _shared[(kind, url)] = build(redis_connection(url))
        return found  # type: ignore[no-any-return]


def resolve(path: str) -> Callable[..., Any]:
    """``"jobs.chunks.process_lane"`` → the function."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


class TaskQueue(Protocol):
    """Somewhere to send ``func(*args)`` to run in the background."""

    def enqueue(self, func: str, *args: Any) -> None: ...

    def depth(self) -> int: ...

    def workers(self) -> int: ...


class RQQueue:
    """Tasks as RQ jobs on Redis, run by ``conveyor worker`` processes."""

    def __init__(self, redis: Redis) -> None:
        from rq import Queue

        self.redis = redis
        self.queue = Queue(QUEUE_NAME, connection=redis)

    def enqueue(self, func: str, *args: Any) -> None:
        """Enqueue; results are not kept (the database holds every outcome)."""
        self.queue.enqueue(
            func, *args, result_ttl=0, failure_ttl=3600, job_timeout=3600, description=func
        )

    def depth(self) -> int:
        """Jobs waiting in the queue."""
        return len(self.queue)

    def workers(self) -> int:
        """``conveyor worker`` processes listening on the queue (1 if Redis cannot say)."""
        from redis.exceptions import RedisError
        from rq import Worker

        try:
            return max(1, Worker.count(queue=self.queue))
        except RedisError:
            return 1


class ThreadQueue:
    """Tasks run by worker threads in this process: no Redis needed."""

    def __init__(self, settings: Settings, threads: int) -> None:
        self._tasks: stdlib_queue.Queue[tuple[str, tuple[Any, ...]] | None] = stdlib_queue.Queue()
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.runtime = Runtime(settings, get_engine(settings.database_url), self)
        self.loop_stops: list[threading.Event] = []  # the embedded sweeper's and scheduler's

        def work() -> None:
            install(self.runtime, thread_only=True)
            while True:
                task = self._tasks.get()
                if task is None:
                    return
                func, args = task
                try:
                    resolve(func)(*args)
                except Exception:  # a failed task must not kill the worker thread
                    log.exception("task %s%r failed", func, args)
                finally:
                    self._tasks.task_done()

        for i in range(threads):
            thread = threading.Thread(target=work, name=f"conveyor-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def enqueue(self, func: str, *args: Any) -> None:
        """Queue a task for the worker threads."""
        if not self._stopping.is_set():
            self._tasks.put((func, args))

    def depth(self) -> int:
        """Tasks waiting for a thread."""
        return self._tasks.qsize()

    def workers(self) -> int:
        """One: the worker threads of this process share one I/O pool."""
        return 1

    def join(self) -> None:
        """Wait until every queued task (and those they queue) has run."""
        self._tasks.join()

    def shutdown(self) -> None:
        """Stop the threads after the tasks in hand."""
        self._stopping.set()
        for stop in self.loop_stops:
            stop.set()
        for _ in self._threads:
            self._tasks.put(None)
        for thread in self._threads:
            thread.join(timeout=10)


def queue_for(settings: Settings) -> TaskQueue:
    """The queue this process sends work to (RQ when ``REDIS_URL`` is set)."""
    if settings.redis_url:
        return RQQueue(redis_connection(settings.redis_url))
    return ThreadQueue(settings, settings.embedded_worker_threads)


# --- runtime ---------------------------------------------------------------------------
# What a task runs against. The web app installs one for its process (``init_app``), as do
# ``conveyor worker`` and ``conveyor scheduler``; the embedded worker threads install
# theirs per thread. Job functions reach it through ``jobs.runtime.current()``.


@dataclass
class Runtime:
    """Settings, engine and queue shared by the job functions of one process or thread."""

    settings: Settings
    engine: Engine
    queue: TaskQueue

    def session(self) -> SQLModelSession:
        """A new session on the runtime's database."""
        return SQLModelSession(self.engine, expire_on_commit=False)


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
        settings = Settings.from_env()
        runtime = Runtime(settings, get_engine(settings.database_url), queue_for(settings))
        install(runtime)
    return runtime


# --- after commit ---------------------------------------------------------------------

_PENDING = "conveyor.enqueue_after_commit"


def enqueue_after_commit(session: Session, queue: TaskQueue, func: str, *args: Any) -> None:
    """Send ``func(*args)`` to ``queue`` once ``session`` commits; a rollback drops it.

    The one place where "commit, then dispatch" happens: a worker that picks the task up
    always finds the rows the task names.
    """
    session.info.setdefault(_PENDING, []).append((queue, func, args))


@event.listens_for(Session, "after_commit")
def _send_pending(session: Session) -> None:
    """Send what waited for this commit (a savepoint's release is not the commit)."""
    if session.in_nested_transaction():
        return
    from redis.exceptions import RedisError

    for queue, func, args in session.info.pop(_PENDING, ()):
        try:
            queue.enqueue(func, *args)
        except RedisError as exc:
            # The rows are committed, so the work is not lost: the sweeper re-dispatches a
            # pending run and restarts a stalled run's lanes once Redis answers again. The
            # client's request succeeded and must not be retried into a second run.
            log.warning("could not queue %s%r now (%s); the sweeper will", func, args, exc)


@event.listens_for(Session, "after_transaction_end")
def _drop_pending(session: Session, transaction: SessionTransaction) -> None:
    """A transaction that ended without its commit (rolled back, or its session closed)
    sends nothing; a savepoint's end leaves the outer transaction's work alone."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


# --- Flask ----------------------------------------------------------------------------


def init_app(app: Flask) -> None:
    """Give the app its queue; the embedded default starts worker threads and its loops."""
    settings: Settings = app.config["CONVEYOR"]
    task_queue = queue_for(settings)
    app.extensions["conveyor.queue"] = task_queue
    install(Runtime(settings, get_engine(settings.database_url), task_queue))
    if isinstance(task_queue, ThreadQueue):
        for flag, starter in EMBEDDED_LOOPS:
            if app.config.get(flag, True):
                task_queue.loop_stops.append(resolve(starter)(task_queue.runtime))


def get_queue(app: Flask | None = None) -> TaskQueue:
    """The queue of ``app`` (or of the current app)."""
    from flask import current_app

    return (app or current_app).extensions["conveyor.queue"]  # type: ignore[no-any-return]


def shutdown_app(app: Flask) -> None:
    """Stop the app's worker threads, if it has any."""
    task_queue = app.extensions.get("conveyor.queue")
    if isinstance(task_queue, ThreadQueue):
        task_queue.shutdown()
