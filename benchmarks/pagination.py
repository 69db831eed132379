"""Cursor pagination at depth: the first page and a page ~90% in cost the same.

Creates its own PostgreSQL database (``conveyor_bench``) next to the one named by
``--database-url``, migrates it, COPYs ``--count`` entities into one workspace, then
times ``GET /api/v1/entities`` through the Flask test client for the first page and
for a page 90% of the way through the list (its cursor built from a known id with
``app.pagination.encode_cursor``). Prints the median times and their ratio, drops the
database, and exits non-zero when the deep page is more than 2x slower.

    .venv/bin/python benchmarks/pagination.py [--count 1000000] [--repeat 25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from sqlmodel import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app, migrate, queue  # noqa: E402
from app.config import Settings  # noqa: E402
from app.db import dispose_engines, get_engine  # noqa: E402
from app.ids import new_id, now_ms  # noqa: E402
from app.models import EntityType  # noqa: E402
from app.pagination import encode_cursor  # noqa: E402
from app.services.workspaces import create_workspace  # noqa: E402

BENCH_DB = "conveyor_bench"
MAX_RATIO = 2.0
COLUMNS = (
    "id, workspace_id, entity_type_id, data, status, version, "
    "published_at, published_version, created_at, updated_at"
)


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as a plain ``postgresql://`` URL psycopg accepts."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str) -> str:
    """(Re)create the benchmark database; return its SQLAlchemy URL."""
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=BENCH_DB)
    return url.render_as_string(hide_password=False)


def drop_database(admin_url: str) -> None:
    """Drop the benchmark database."""
    dispose_engines()
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def seed(url: str, count: int) -> tuple[str, list[str], list[str]]:
    """``count`` entities in a new workspace, one in ten ``ready``, the rest ``draft``.

    Returns the workspace's admin key, every entity id sorted, and the ``ready`` ids sorted.
    """
    with Session(get_engine(url), expire_on_commit=False) as session:
        workspace, _, key = create_workspace(session=session, name="Bench")
        entity_type = EntityType(
            id=new_id("et"), workspace_id=workspace.id, name="Product", schema_={"type": "object"}
        )
        session.add(entity_type)
        session.commit()
    ids = [new_id("ent") for _ in range(count)]
    now = now_ms()
    started = time.perf_counter()
    with psycopg.connect(_libpq(url)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY entities ({COLUMNS}) FROM STDIN") as copy:
            for i, entity_id in enumerate(ids):
                data = json.dumps({"title": f"Item {i}", "price": i % 1000})
                status = "ready" if i % 10 == 0 else "draft"
                copy.write_row(
                    (entity_id, workspace.id, entity_type.id, data, status, 1, None, None, now, now)
                )
        conn.commit()
        conn.execute("ANALYZE entities")
        conn.commit()
    print(f"inserted {count:,} entities in {time.perf_counter() - started:.1f} s (COPY)")
    ready = sorted(ids[::10])
    ids.sort()
    return key, ids, ready


def time_request(client, url: str, headers: dict[str, str], repeat: int) -> float:
    """Median wall time of ``repeat`` GETs of ``url``, in milliseconds, after a warm-up."""
    for _ in range(3):
        assert client.get(url, headers=headers).status_code == 200
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.get_json()
    return statistics.median(samples)


def run(admin_url: str, count: int, repeat: int) -> bool:
    """Seed, time both pages for each page size, and report; True when within the bound."""
    url = create_database(admin_url)
    app = None
    try:
        migrate.upgrade(url)
        key, ids, ready = seed(url, count)
        app = create_app(
            {"CONVEYOR": Settings(database_url=url, redis_url=None), "AUTO_MIGRATE": False}
        )
        client = app.test_client()
        headers = {"Authorization": f"Bearer {key}"}
        print(f"deep pages start 90% of the way through the list; {repeat} repetitions")
        ok = True
        cases = [("", ids, 50), ("", ids, 1000), ("&status=ready", ready, 50)]
        for query, listed, limit in cases:
            position = max(1, int(len(listed) * 0.9))
            first_url = f"/api/v1/entities?limit={limit}{query}"
            deep_url = f"{first_url}&cursor={encode_cursor(listed[position - 1])}"
            deep = client.get(deep_url, headers=headers).get_json()
            expected = listed[position : position + limit]
            assert [e["id"] for e in deep] == expected, "the deep page is not the expected slice"
            first_ms = time_request(client, first_url, headers, repeat)
            deep_ms = time_request(client, deep_url, headers, repeat)
            ratio = deep_ms / first_ms
            ok = ok and ratio <= MAX_RATIO
            label = f"limit={limit}{query.replace('&', ' ')}"
            print(
                f"{label:<25} first page {first_ms:8.2f} ms   after #{position:<9,} "
                f"{deep_ms:8.2f} ms   ratio {ratio:.2f} (bound {MAX_RATIO:.0f}x)"
            )
        return ok
    finally:
        if app is not None:
            queue.shutdown_app(app)
        drop_database(admin_url)


def main() -> int:
    """Parse arguments and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="a PostgreSQL database to connect to; the benchmark creates and drops "
        f"its own database {BENCH_DB!r} beside it",
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="entities to insert")
    parser.add_argument("--repeat", type=int, default=25, help="timed requests per page")
    args = parser.parse_args()
    if args.count < 2:
        parser.error("--count must be at least 2")
    ok = run(args.database_url, args.count, args.repeat)
    print("OK: deep pages cost about the same as the first" if ok else "FAIL: ratio above bound")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
