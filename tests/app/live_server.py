"""``conveyor serve`` (gunicorn) as a real process on a test's database, for the tests that
need a real HTTP server: keep-alive connections, schemathesis."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def conveyor_serve(settings: Settings, *, workers: int | None = None) -> Iterator[str]:
    """Run ``conveyor serve`` on ``settings``' database; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "CONVEYOR_SECRET_KEY": ",".join(settings.secret_keys),
        "CONVEYOR_LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    if workers:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert process.poll() is None, "conveyor serve exited"
            assert time.monotonic() < deadline, "conveyor serve did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
