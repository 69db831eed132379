"""Configuration read from environment variables, with an embedded default."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _int(name: str, default: int) -> int:
    """Read an integer environment variable."""
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


@dataclass(frozen=True)
class Settings:
    """Everything Conveyor reads from its environment."""

    database_url: str
    redis_url: str | None
    secret_keys: tuple[str, ...] = ()
    max_content_length: int = 10 * 1024 * 1024
    chunk_size: int = 500
    lease_seconds: int = 60
    sweep_interval_seconds: int = 5
    embedded_worker_threads: int = 4
    worker_io_concurrency: int = 200
    run_retention_days: int | None = None  # finished runs older than this are purged
    outbound_allow_hosts: tuple[str, ...] = field(default_factory=tuple)

    @property
    def embedded_queue(self) -> bool:
        """True when no Redis is configured: jobs run on in-process threads."""
        return not self.redis_url

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from the process environment."""
        home = Path(os.environ.get("CONVEYOR_HOME", ".")).resolve()
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{home / 'conveyor.db'}"
        if database_url.startswith("postgres://"):
            database_url = "postgresql://" + database_url.removeprefix("postgres://")
        if database_url.startswith("postgresql://"):
            database_url = "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
        secret = os.environ.get("CONVEYOR_SECRET_KEY", "")
        allow = os.environ.get("CONVEYOR_OUTBOUND_ALLOW_HOSTS", "")
        return cls(
            database_url=database_url,
            redis_url=os.environ.get("REDIS_URL") or None,
            secret_keys=tuple(k.strip() for k in secret.split(",") if k.strip()),
            max_content_length=_int("CONVEYOR_MAX_BODY_BYTES", 10 * 1024 * 1024),
            chunk_size=_int("CONVEYOR_CHUNK_SIZE", 500),
            lease_seconds=_int("CONVEYOR_LEASE_SECONDS", 60),
            sweep_interval_seconds=_int("CONVEYOR_SWEEP_SECONDS", 5),
            embedded_worker_threads=_int("CONVEYOR_WORKER_THREADS", 4),
            worker_io_concurrency=_int("CONVEYOR_WORKER_IO_CONCURRENCY", 200),
            run_retention_days=_int("CONVEYOR_RUN_RETENTION_DAYS", 0) or None,
            outbound_allow_hosts=tuple(h.strip() for h in allow.split(",") if h.strip()),
        )
