"""The ``conveyor`` commands that run the job side: ``worker``, ``scheduler``, ``demo``.

``app.cli.main`` lists them by dotted path and imports this module when one is used.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import click

from app.cli import safe_url
from app.config import Settings


@click.command()
@click.option("--burst", is_flag=True, help="Stop when the queue is empty.")
@click.option("--name", default=None, help="Worker name (default: RQ's).")
def worker(burst: bool, name: str | None) -> None:
    """Run an RQ worker on REDIS_URL (plus a sweeper thread that restarts stuck work)."""
    from redis.exceptions import RedisError
    from rq import SimpleWorker

    from app.db import get_engine
    from app.queue import QUEUE_NAME, RQQueue, Runtime, install, redis_connection
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
    import jobs.finalize
    import jobs.step_services  # noqa: F401 (imported for its side effect: loaded before the freeze)
    from steps.registry import get_step_type, step_type_names

    for name in step_type_names():
        get_step_type(name)
    gc.collect()
    gc.freeze()


@click.command()
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
        safe_url(runtime.settings.database_url),
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


@click.command()
@click.option("--entities", "count", default=1000, show_default=True)
def demo(count: int) -> None:
    """Create an entity type, entities and a workflow, run it, and show its progress."""
    from app import configure_logging
    from jobs.demo import run_demo

    configure_logging("WARNING")  # the progress bar is the demo's output; problems still show
    run_demo(count)
