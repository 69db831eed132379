"""Workspace-wide LLM rate limits across worker processes, through the real run engine.

Starts a local OpenAI-format server (``tests.peers.OpenAIPeer``) that enforces its own limit of
``--rpm`` requests in any 60 s window and answers 429 past it. Creates a PostgreSQL database
(``conveyor_bench_rate_limit``, next to the one ``--database-url`` names), a workspace, an
``openai`` credential with ``requestsPerMinute: --rpm``, ``--entities`` entities and a
workflow with one ``ai_generate`` step; starts ``--workers`` ``conveyor worker`` processes on
``--redis-url`` (the database there is flushed) and runs the workflow over every entity.

Prints the rate the server saw (requests per minute between its first and last answer) as a
fraction of the limit, the 429s it had to send, and the failed entities; exits non-zero
unless the fraction is at least 0.95 with no 429 and no failure.

    .venv/bin/python benchmarks/rate_limit.py [--entities 2000] [--workers 4] [--rpm 1200]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from redis import Redis
from sqlalchemy.engine import make_url
from sqlmodel import Session

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app import migrate  # noqa: E402
from app.crypto import SecretBox  # noqa: E402
from app.db import dispose_engines, get_engine  # noqa: E402
from app.models import Run  # noqa: E402
from app.queue import RQQueue  # noqa: E402
from app.schemas.workflows import SettingsSchema  # noqa: E402
from app.services.credentials import create_credential  # noqa: E402
from app.services.entities import create_entities, create_entity_type  # noqa: E402
from app.services.runs import start_run  # noqa: E402
from app.services.workflows import create_workflow  # noqa: E402
from app.services.workspaces import create_workspace  # noqa: E402
from tests.peers import OpenAIPeer  # noqa: E402

BENCH_DB = "conveyor_bench_rate_limit"
SECRET_KEY = "benchmark-secret-key-0123456789abcdef"  # noqa: S105 (a throwaway database)
MIN_FRACTION = 0.95


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str, name: str = BENCH_DB) -> str:
    """(Re)create a benchmark database next to ``admin_url`` and migrate it; its URL."""
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    rendered = url.render_as_string(hide_password=False)
    migrate.upgrade(rendered)
    return rendered


def drop_database(admin_url: str, name: str = BENCH_DB) -> None:
    """Drop a benchmark database."""
    dispose_engines()
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def ai_step() -> dict[str, Any]:
    """The benchmarks' ``ai_generate`` step, on the ``bench-llm`` credential."""
    return {
        "id": "describe",
        "type": "ai_generate",
        "config": {
            "provider": "openai",
            "model": "gpt-bench",
            "credential": "bench-llm",
            "prompt": "Describe {{ entity.data.title }} in one line.",
            "outputField": "description",
        },
    }


def prepare(url: str, peer: OpenAIPeer, count: int, rpm: int) -> tuple[str, list[str]]:
    """A workspace with the credential, entities and workflow; the workflow id and entity ids."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        workspace, _, _ = create_workspace(session=session, name="Rate limit benchmark")
        create_credential(
            session=session,
            workspace_id=workspace.id,
            data={
                "name": "bench-llm",
                "type": "openai",
                "data": {"apiKey": peer.api_key},
                "settings": {"baseUrl": peer.base_url, "requestsPerMinute": rpm},
            },
            box=SecretBox([SECRET_KEY]),
        )
        entity_type = create_entity_type(
            session=session,
            workspace_id=workspace.id,
            data={"name": "Product", "schema_": {"type": "object"}},
        )
        rows = create_entities(
            session=session,
            workspace_id=workspace.id,
            items=[
                {"entity_type_id": entity_type.id, "data": {"title": f"Product {i}"}}
                for i in range(count)
            ],
        )
        session.commit()
        workflow = create_workflow(
            session=session,
            workspace_id=workspace.id,
            data={
                "name": "Describe products",
                "entity_type_id": entity_type.id,
                "status": "active",
                "steps": [ai_step()],
                "settings": SettingsSchema().load({}),
            },
        )
        return workflow.id, [r["id"] for r in rows]


def start_workers(count: int, url: str, redis_url: str) -> list[subprocess.Popen[bytes]]:
    """``count`` ``conveyor worker`` processes."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "CONVEYOR_SECRET_KEY": SECRET_KEY,
        "CONVEYOR_OUTBOUND_ALLOW_HOSTS": "127.0.0.1",
    }
    command = [str(Path(sys.executable).parent / "conveyor"), "worker"]
    return [
        subprocess.Popen(
            [*command, "--name", f"bench-{i}-{os.getpid()}"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(count)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--entities", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=1200, help="the limit, requests per minute")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    redis = Redis.from_url(args.redis_url)
    redis.flushdb()
    url = create_database(args.database_url)
    workers: list[subprocess.Popen[bytes]] = []
    with OpenAIPeer(api_key="sk-bench-0123456789", requests_per_minute=args.rpm) as peer:
        try:
            workflow_id, entity_ids = prepare(url, peer, args.entities, args.rpm)
            workers = start_workers(args.workers, url, args.redis_url)
            with Session(get_engine(url), expire_on_commit=False) as session:
                from app.models import Workflow

                workflow = session.get(Workflow, workflow_id)
                assert workflow is not None
                run = start_run(
                    session=session, queue=RQQueue(redis), workflow=workflow, entity_ids=entity_ids
                )
            run_id = run.id
            started = time.monotonic()
            while time.monotonic() - started < args.timeout:
                with Session(get_engine(url)) as session:
                    row = session.get(Run, run_id)
                    assert row is not None
                    status, done, failed = row.status, row.completed, row.failed
                if status in ("completed", "failed", "cancelled"):
                    break
                time.sleep(1)
            else:
                print(f"run {run_id} did not finish in {args.timeout:g}s ({done} done)")
                return 1
            elapsed = time.monotonic() - started
        finally:
            for process in workers:
                process.send_signal(signal.SIGTERM)
            for process in workers:
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        times = sorted(peer.completed_at)
        sent_429 = peer.statuses.get(429, 0)
        other_errors = sum(n for s, n in peer.statuses.items() if s not in (200, 429))
    drop_database(args.database_url)

    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    achieved = (len(times) - 1) / span * 60 if span else float("nan")
    fraction = achieved / args.rpm
    print(
        f"{args.entities} ai_generate entities, {args.workers} worker processes, "
        f"limit {args.rpm} requests/min (server: sliding 60 s window)"
    )
    print(f"run {status} in {elapsed:.1f} s: {done} completed, {failed} failed")
    print(f"requests answered: {len(times)} over {span:.1f} s = {achieved:.1f}/min")
    print(f"achieved rate / limit: {fraction:.3f}")
    print(f"429s sent by the server: {sent_429}")
    print(f"other error answers: {other_errors}")
    print(f"failed entities: {failed}")
    ok = fraction >= MIN_FRACTION and sent_429 == 0 and failed == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
