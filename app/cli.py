"""The ``conveyor`` command line."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import click

from app.cli_remote import register as register_remote_commands
from app.cli_remote import remote_options
from app.config import Settings


@click.group()
def main() -> None:
    """Conveyor: typed workflows over batches of entities."""
    from app.redaction import install_log_redaction

    install_log_redaction()  # every process scrubs secrets from its logs from the start


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    """Apply Alembic migrations up to REVISION (default: head)."""
    from app import migrate

    settings = Settings.from_env()
    migrate.upgrade(settings.database_url, revision)
    click.echo(f"database at {revision}: {_safe_url(settings.database_url)}")


@db.command("check")
def db_check() -> None:
    """Exit 0 when the schema is at this version's head revision; else say what to do."""
    from app import migrate
    from app.db import get_engine

    settings = Settings.from_env()
    shown = _safe_url(settings.database_url)
    if settings.database_url.startswith("sqlite:///"):
        path = settings.database_url.removeprefix("sqlite:///")
        if not os.path.isfile(path):  # opening it would create an empty file
            raise click.ClickException(f"{shown}: no database file: {migrate.UPGRADE_HINT}")
    try:
        problem = migrate.schema_problem(get_engine(settings.database_url))
    except Exception as exc:  # any driver error: unreachable, refused, bad credentials
        raise click.ClickException(f"{shown}: the database cannot be opened ({exc})") from exc
    if problem:
        raise click.ClickException(f"{shown}: {problem}")
    click.echo(f"database schema at head: {shown}")


def _safe_url(url: str) -> str:
    """A database URL without its password, for printing."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@main.group()
def workspaces() -> None:
    """Workspaces."""


@workspaces.command("create")
@click.argument("name")
def workspaces_create(name: str) -> None:
    """Create workspace NAME and print its first admin key (shown once)."""
    from sqlmodel import Session

    from app.cli_remote import require_migrated
    from app.db import get_engine
    from app.services.workspaces import create_workspace

    settings = Settings.from_env()
    # Refuse, rather than create, a database that `conveyor serve` would not be using.
    require_migrated(settings.database_url)
    with Session(get_engine(settings.database_url), expire_on_commit=False) as session:
        workspace, key_row, key = create_workspace(session=session, name=name)
    click.echo(f"workspace {workspace.id} ({name})", err=True)
    click.echo(f"admin key {key_row.id} - store it now, it is not shown again:", err=True)
    click.echo(key)


@main.command()
@click.option(
    "--host", default=lambda: os.environ.get("HOST", "127.0.0.1"), show_default="127.0.0.1"
)
@click.option("--port", default=lambda: int(os.environ.get("PORT", "8000")), show_default="8000")
@click.option("--workers", default=None, type=int, help="gunicorn processes (embedded: 1)")
def serve(host: str, port: int, workers: int | None) -> None:
    """Serve the API with gunicorn (embedded default: one process, worker threads)."""
    from gunicorn.app.base import BaseApplication

    from app import create_app

    settings = Settings.from_env()
    # The embedded queue lives in the web process, so it must be exactly one process.
    processes = 1 if settings.embedded_queue else (workers or 2)

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", processes)
            self.cfg.set("threads", 8)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return create_app()

    click.echo(f"Conveyor on http://{host}:{port}/api/v1/docs", err=True)
    _Server().run()


@main.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
def worker(burst: bool, name: str | None) -> None:
    """Run an RQ worker on REDIS_URL (plus a sweeper thread that restarts stuck work)."""
    from redis.exceptions import RedisError
    from rq import SimpleWorker

    from app.db import get_engine
    from jobs.queue import QUEUE_NAME, RQQueue, redis_connection
    from jobs.runtime import Runtime, install
    from jobs.sweeper import start_sweeper_thread

    settings = Settings.from_env()
    if not settings.redis_url:
        raise click.UsageError("REDIS_URL is not set: the embedded default runs jobs in `serve`.")
    redis = redis_connection(settings.redis_url)
    runtime = Runtime(settings, get_engine(settings.database_url), RQQueue(redis))
    install(runtime)
    _warm_up_worker()
    from app import configure_logging

    configure_logging()
    log = logging.getLogger("conveyor.worker")
    log.info(
        "conveyor worker %s starting: %d I/O threads, chunks of %d, lease %d s",
        name or "(unnamed)",
        settings.worker_io_concurrency,
        settings.chunk_size,
        settings.lease_seconds,
    )
    stop = start_sweeper_thread(runtime)
    delay, restarts = 1.0, 0
    try:
        while True:
            # SimpleWorker runs jobs in this process: lanes are long, and the database pool
            # and the I/O threads survive between jobs (a fork per job would lose both).
            # A restarted worker takes a new name: its old registration may outlive it.
            current = f"{name}.{restarts}" if name and restarts else name
            rq_worker: Any = None
            try:
                rq_worker = SimpleWorker([QUEUE_NAME], connection=redis, name=current)
                rq_worker.work(burst=burst, with_scheduler=False)
            except RedisError as exc:
                # RQ gives up on a lost connection (and raises again registering its
                # death): ride out the outage and start over against the new server.
                log.warning("Redis is unreachable (%s); reconnecting in %.0f s", exc, delay)
            else:
                if burst or _stop_requested(rq_worker):
                    break
                log.warning("the RQ worker stopped unexpectedly; restarting in %.0f s", delay)
            if _stop_requested(rq_worker):
                break
            time.sleep(delay)
            restarts += 1
            delay = 1.0 if _redis_answers(redis) else min(30.0, delay * 2)
    finally:
        stop.set()
        log.info("conveyor worker stopped")


def _stop_requested(rq_worker: Any) -> bool:
    """True once the worker was told to stop (SIGTERM or SIGINT), busy or idle."""
    if rq_worker is None:
        return False
    return bool(rq_worker._stop_requested or rq_worker._shutdown_requested_date)


def _redis_answers(redis: Any) -> bool:
    """True when Redis answers a ping."""
    from redis.exceptions import RedisError

    try:
        return bool(redis.ping())
    except RedisError:
        return False


def _warm_up_worker() -> None:
    """Import what jobs run, then exempt those long-lived objects from garbage collection.

    ``gc.freeze`` moves everything alive now into a generation the collector never scans,
    so the collections that chunk processing triggers stay short.
    """
    import gc

    import jobs.chunks
    import jobs.dispatch
    import jobs.services  # noqa: F401 (imported for its side effect: loaded before the freeze)
    from steps.registry import get_step_type, step_type_names

    for name in step_type_names():
        get_step_type(name)
    gc.collect()
    gc.freeze()


@main.command()
@click.option("--interval", default=5.0, show_default=True, help="Seconds between ticks.")
def scheduler(interval: float) -> None:
    """Fire due cron triggers and sweep stuck runs, until stopped."""
    import logging
    import threading

    from app import configure_logging
    from jobs.runtime import current
    from jobs.sweeper import start_sweeper_thread

    configure_logging()
    runtime = current()
    logging.getLogger("conveyor.scheduler").info(
        "conveyor scheduler starting: tick every %ss, sweep every %ss, database %s, queue %s",
        interval,
        runtime.settings.sweep_interval_seconds,
        _safe_url(runtime.settings.database_url),
        "redis" if runtime.settings.redis_url else "in-process threads",
    )
    stop = threading.Event()
    sweeper_stop = start_sweeper_thread(runtime)
    try:
        from jobs.scheduler import run_scheduler

        run_scheduler(runtime, stop, interval_seconds=interval)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        sweeper_stop.set()


@main.command()
@click.option("--entities", "count", default=1000, show_default=True)
def demo(count: int) -> None:
    """Create an entity type, entities and a workflow, run it, and show its progress."""
    from app import configure_logging
    from jobs.demo import run_demo

    configure_logging("WARNING")  # the progress bar is the demo's output; problems still show
    run_demo(count)


@main.group()
def runs() -> None:
    """Runs."""


@runs.command("watch")
@click.argument("run_id")
@click.option("--interval", default=0.5, show_default=True)
@click.option("--workflow", "workflow_id", default=None, help="(server) the run's workflow id.")
@remote_options
def runs_watch(
    run_id: str, interval: float, workflow_id: str | None, url: str | None, api_key: str | None
) -> None:
    """Show a live progress bar (counts, rate, ETA) for RUN_ID until it finishes.

    Through a server when CONVEYOR_URL and CONVEYOR_API_KEY (or --url/--api-key) are set,
    else from the local database.
    """
    from app.cli_remote import remote_client, require_migrated, watch_remote
    from app.db import get_engine
    from jobs.watch import watch_run

    client = remote_client(url, api_key)
    if client is not None:
        with client:
            watch_remote(client, run_id, workflow_id)
        return
    settings = Settings.from_env()
    require_migrated(settings.database_url)
    run = watch_run(get_engine(settings.database_url), run_id, interval=interval)
    if run is None:
        raise click.ClickException(f"no run {run_id}")


register_remote_commands(main)  # runs start, workflows export|import|validate (over HTTP)


if __name__ == "__main__":
    sys.exit(main())
