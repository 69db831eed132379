"""Throughput of the run engine against raw RQ and a plain loop, in one run.

    .venv/bin/python benchmarks/throughput.py [--entities 10000] [--post-ids 100000]

Needs PostgreSQL and Redis (defaults: the local services). Prints:
(a) Conveyor entities/s, 10,000 entities through transform -> validate -> condition,
    2 `conveyor worker` processes; (b) raw RQ, 10,000 no-op jobs, 2 SimpleWorkers;
(c) the same three steps in a plain in-process loop; the ratios a/b and a/c;
the time of POST .../run with 100,000 ids; and the workers' peak RSS.

Order: set-up, VACUUM ANALYZE, (c) and (b) on the quiet machine, then the Conveyor runs,
then (c) again; the better (c) counts. (a) is measured from the POST to the run's final
status as a client polling the database would see it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from redis import Redis
from rq import Queue
from sqlalchemy.engine import make_url
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import create_app, migrate  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db import get_engine  # noqa: E402
from app.models import Run  # noqa: E402
from app.services.workspaces import create_workspace  # noqa: E402
from steps.base import EntityState  # noqa: E402
from steps.pipeline import EntityProgress, RunInfo, walk  # noqa: E402

STEPS = [
    {
        "id": "shape",
        "type": "transform",
        "config": {"set": {"slug": "{{ entity.data.title | lower }}"}},
    },
    {
        "id": "check",
        "type": "validate",
        "config": {"rules": [{"field": "title", "required": True}]},
    },
    {
        "id": "cheap",
        "type": "condition",
        "config": {"if": "entity.data.price < 1000", "then": "continue"},
    },
]
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "price": {"type": "number"}},
}


def fresh_database(base_url: str) -> str:
    """Create (anew) the database conveyor_bench_tp and return its SQLAlchemy URL."""
    url = make_url(base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with connect(url.render_as_string(hide_password=False)) as conn:
        conn.execute("DROP DATABASE IF EXISTS conveyor_bench_tp WITH (FORCE)")
        conn.execute("CREATE DATABASE conveyor_bench_tp")
    return url.set(database="conveyor_bench_tp").render_as_string(hide_password=False)


def start_workers(
    count: int, env: dict[str, str], command: list[str]
) -> list[subprocess.Popen[bytes]]:
    """Worker processes running ``command``."""
    return [
        subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(count)
    ]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_run(engine, run_id: str) -> Run:
    """Poll until the run is final."""
    while True:
        with Session(engine) as session:
            run = session.get(Run, run_id)
            if run.status in ("completed", "failed", "cancelled"):
                return run
        time.sleep(0.05)


def conveyor_rate(client, headers, workflow_id: str, ids: list[str], engine) -> tuple[float, Run]:
    """Entities/s for one run over ``ids``, from POST to final status."""
    started = time.perf_counter()
    response = client.post(
        f"/api/v1/workflows/{workflow_id}/run", json={"entityIds": ids}, headers=headers
    )
    assert response.status_code == 202, response.json
    run = wait_run(engine, response.json["runId"])
    return len(ids) / (time.perf_counter() - started), run


def raw_rq_rate(redis_url: str, count: int, env: dict[str, str]) -> float:
    """No-op jobs/s with 2 SimpleWorkers in burst mode."""
    redis = Redis.from_url(redis_url)
    queue = Queue("bench_noop", connection=redis)
    queue.empty()
    with redis.pipeline() as pipe:
        for i in range(count):
            queue.enqueue("benchmarks.noop.noop", i, result_ttl=0, pipeline=pipe)
        pipe.execute()
    command = [
        sys.executable,
        "-m",
        "rq.cli",
        "worker",
        "--burst",
        "-w",
        "rq.worker.SimpleWorker",
        "--url",
        redis_url,
        "bench_noop",
    ]
    started = time.perf_counter()
    for process in start_workers(2, env, command):
        process.wait()
    return count / (time.perf_counter() - started)


def connect(database_url: str) -> psycopg.Connection:
    """An autocommit psycopg connection to ``database_url`` (a SQLAlchemy URL)."""
    url = make_url(database_url)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        dbname=url.database,
        autocommit=True,
    )


def settle(database_url: str) -> None:
    """VACUUM ANALYZE the benchmark database: no autovacuum pending, and real statistics."""
    with connect(database_url) as conn:
        conn.execute("VACUUM ANALYZE")


def loop_rate(count: int) -> float:
    """The three steps applied in a plain loop: no queue, no database."""
    info = RunInfo(
        run={"id": "r", "workflowId": "w", "trigger": {}},
        steps=STEPS,
        settings={"retry": {"max_attempts": 1}},
        entity_schema=SCHEMA,
    )
    started = time.perf_counter()
    for i in range(count):
        walk(
            EntityProgress(
                EntityState(f"e{i}", {"title": f"Item {i}", "price": i % 500}, "draft", 1)
            ),
            info,
        )
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--post-ids", type=int, default=100_000)
    args = parser.parse_args()

    database_url = fresh_database(args.database_url)
    migrate.upgrade(database_url)
    Redis.from_url(args.redis_url).flushdb()
    settings = Settings(database_url=database_url, redis_url=args.redis_url)
    app = create_app({"CONVEYOR": settings, "AUTO_MIGRATE": False})
    client = app.test_client()
    engine = get_engine(database_url)
    with Session(engine) as session:
        _, _, key = create_workspace(session=session, name="bench")
    headers = {"Authorization": f"Bearer {key}"}
    entity_type = client.post(
        "/api/v1/entity-types", json={"name": "P", "schema": SCHEMA}, headers=headers
    ).json
    total = max(args.entities, args.post_ids)
    ids: list[str] = []
    for start in range(0, total, 10_000):
        batch = [
            {"entityTypeId": entity_type["id"], "data": {"title": f"Item {i}", "price": i % 500}}
            for i in range(start, min(total, start + 10_000))
        ]
        ids += [
            e["id"]
            for e in client.post(
                "/api/v1/entities/bulk", json={"entities": batch}, headers=headers
            ).json
        ]
    workflow = client.post(
        "/api/v1/workflows",
        headers=headers,
        json={
            "name": "bench",
            "entityTypeId": entity_type["id"],
            "steps": STEPS,
            "settings": {"concurrency": 2000},
        },
    ).json

    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": args.redis_url}
    settle(database_url)
    # Baselines first, on a quiet machine; the loop again at the end, and its best is kept,
    # so background work after the runs (autovacuum) cannot flatter the ratios.
    rate_c_before = loop_rate(args.entities)
    rate_b = raw_rq_rate(args.redis_url, args.entities, env)
    workers = start_workers(2, env, [sys.executable, "-m", "app.cli", "worker"])
    time.sleep(2)
    try:
        rate_a, run = conveyor_rate(client, headers, workflow["id"], ids[: args.entities], engine)
        assert run.completed == args.entities, run
        rss_after_small = [peak_rss_mb(w.pid) for w in workers]
        started = time.perf_counter()
        response = client.post(
            f"/api/v1/workflows/{workflow['id']}/run",
            json={"entityIds": ids[: args.post_ids]},
            headers=headers,
        )
        post_seconds = time.perf_counter() - started
        assert response.status_code == 202, response.json
        big = wait_run(engine, response.json["runId"])
        assert big.completed == args.post_ids, big
        rss_after_big = [peak_rss_mb(w.pid) for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    rate_c = max(rate_c_before, loop_rate(args.entities))

    print(f"(a) Conveyor, {args.entities} entities, 2 workers: {rate_a:,.0f} entities/s")
    print(f"(b) raw RQ, {args.entities} no-op jobs, 2 SimpleWorkers: {rate_b:,.0f} jobs/s")
    print(f"(c) plain in-process loop, same 3 steps: {rate_c:,.0f} entities/s")
    print(
        f"a/b = {rate_a / rate_b:.1f} (target >= 10)   a/c = {rate_a / rate_c:.2f} (target >= 0.25)"
    )
    print(f"POST .../run with {args.post_ids:,} ids: {post_seconds:.3f} s (target < 1 s)")
    print(
        f"worker peak RSS (MiB) after the {args.entities:,}-entity run: "
        f"{', '.join(f'{r:.0f}' for r in rss_after_small)}; "
        f"after the {args.post_ids:,}-entity run: "
        f"{', '.join(f'{r:.0f}' for r in rss_after_big)}"
    )


if __name__ == "__main__":
    main()
