"""Operational metrics for ``GET /metrics`` (Prometheus text format).

What the database already holds exactly (runs by status, entities processed by outcome,
entities waiting) is read from it at scrape time. What only workers see (step durations,
LLM provider calls) is added up in Redis, one hash per metric shared by every worker
process, or in this process for the embedded default, whose workers are threads. A
Redis flush resets those counters; Prometheus treats that as a counter reset.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlmodel import col

from app.config import Settings
from app.models import Run
from app.statuses import TERMINAL, RunStatus

log = logging.getLogger(__name__)

STEP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STEP_DURATIONS = "step_duration"
PROVIDER_CALLS = "provider_calls"
RUN_STATUSES = tuple(RunStatus)
OUTCOMES = TERMINAL


class MetricsStore(Protocol):
    """Counters shared by the processes that report to one ``/metrics``."""

    def add(self, metric: str, increments: Mapping[str, float]) -> None: ...

    def read(self, metric: str) -> dict[str, float]: ...


class LocalStore:
    """Counters in this process (the embedded default: workers are threads here)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, defaultdict[str, float]] = {}

    def add(self, metric: str, increments: Mapping[str, float]) -> None:
        """Add ``increments`` to the metric's fields."""
        with self._lock:
            fields = self._metrics.setdefault(metric, defaultdict(float))
            for name, amount in increments.items():
                fields[name] += amount

    def read(self, metric: str) -> dict[str, float]:
        """The metric's fields and their totals."""
        with self._lock:
            return dict(self._metrics.get(metric, {}))


class RedisStore:
    """Counters in Redis hashes, shared by every worker process on every machine."""

    prefix = "conveyor:metrics:"

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def add(self, metric: str, increments: Mapping[str, float]) -> None:
        """HINCRBYFLOAT each field, in one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in increments.items():
                pipe.hincrbyfloat(self.prefix + metric, name, amount)
            pipe.execute()

    def read(self, metric: str) -> dict[str, float]:
        """The metric's fields and their totals."""
        raw = self.redis.hgetall(self.prefix + metric)
        return {key.decode(): float(value) for key, value in raw.items()}  # type: ignore[union-attr]


_local_store = LocalStore()


def store_for(settings: Settings) -> MetricsStore:
    """Where this process's metrics go: Redis when it is configured, else this process."""
    if not settings.redis_url:
        return _local_store
    from app.queue import shared_per_redis

    return shared_per_redis("metrics", settings.redis_url, RedisStore)


def _safely_add(store: MetricsStore, metric: str, increments: Mapping[str, float]) -> None:
    """Metrics are best effort: a Redis outage must not fail the work they describe."""
    if not increments:
        return
    try:
        store.add(metric, increments)
    except RedisError as exc:
        log.warning("metrics not recorded (%s): %s", metric, exc)


def _bucket(seconds: float) -> str:
    """The upper bound of the histogram bucket a duration falls in."""
    for bound in STEP_DURATION_BUCKETS:
        if seconds <= bound:
            return repr(bound)
    return "+Inf"


def observe_step_records(store: MetricsStore, records: Sequence[dict[str, Any]]) -> None:
    """Count finished step records into the step duration histogram, by step type."""
    increments: defaultdict[str, float] = defaultdict(float)
    for record in records:
        seconds = (record.get("durationMs") or 0) / 1000
        step_type = record["type"]
        increments[f"{step_type}|{_bucket(seconds)}"] += 1
        increments[f"{step_type}|sum"] += seconds
    _safely_add(store, STEP_DURATIONS, increments)


def observe_provider_call(store: MetricsStore, provider: str, outcome: str) -> None:
    """Count one LLM provider request by outcome (``rate_limited`` is a 429)."""
    _safely_add(store, PROVIDER_CALLS, {f"{provider}|{outcome}": 1})


class ConveyorCollector:
    """A prometheus_client collector that reads the database and the store per scrape."""

    def __init__(self, session_factory: Any, store: MetricsStore, queue_depth: Any) -> None:
        self.session_factory = session_factory
        self.store = store
        self.queue_depth = queue_depth

    def collect(self) -> Iterator[Metric]:
        """Every Conveyor metric family."""
        yield from self._database_metrics()
        queue = GaugeMetricFamily(
            "conveyor_queue_depth", "Jobs waiting in the task queue (RQ, or the embedded one)."
        )
        queue.add_metric([], float(self.queue_depth()))
        yield queue
        yield from self._stored_metrics()

    def _database_metrics(self) -> Iterator[Metric]:
        with self.session_factory() as session:
            by_status: dict[str, int] = {
                status: count
                for status, count in session.execute(
                    select(col(Run.status), func.count()).group_by(col(Run.status))
                )
            }
            processed = session.execute(
                select(
                    func.sum(col(Run.completed)),
                    func.sum(col(Run.failed)),
                    func.sum(col(Run.cancelled)),
                )
            ).one()
            waiting = session.scalar(
                select(
                    func.sum(
                        col(Run.total) - col(Run.completed) - col(Run.failed) - col(Run.cancelled)
                    )
                ).where(col(Run.status).in_((RunStatus.PENDING, RunStatus.RUNNING)))
            )
        runs = GaugeMetricFamily("conveyor_runs", "Runs by status.", labels=["status"])
        for status in sorted(set(RUN_STATUSES) | set(by_status)):
            runs.add_metric([status], float(by_status.get(status, 0)))
        yield runs
        entities = CounterMetricFamily(
            "conveyor_entities_processed",
            "Entities that reached a final state in a run, by outcome.",
            labels=["outcome"],
        )
        for outcome, total in zip(OUTCOMES, processed, strict=True):
            entities.add_metric([outcome], float(total or 0))
        yield entities
        pending = GaugeMetricFamily(
            "conveyor_entities_waiting",
            "Entities of pending and running runs not yet in a final state.",
        )
        pending.add_metric([], float(waiting or 0))
        yield pending

    def _stored_metrics(self) -> Iterator[Metric]:
        durations = HistogramMetricFamily(
            "conveyor_step_duration_seconds",
            "Time one entity spent in one step (retries included), by step type.",
            labels=["type"],
        )
        calls = CounterMetricFamily(
            "conveyor_provider_requests",
            "LLM provider requests by outcome: ok, rate_limited (429), unavailable "
            "(5xx, timeouts), rejected (other 4xx).",
            labels=["provider", "outcome"],
        )
        try:
            stored_durations = self.store.read(STEP_DURATIONS)
            stored_calls = self.store.read(PROVIDER_CALLS)
        except RedisError as exc:
            log.warning("metrics store unreadable: %s", exc)
            stored_durations, stored_calls = {}, {}
        for step_type, (buckets, total) in sorted(cumulative_histograms(stored_durations).items()):
            durations.add_metric([step_type], buckets, total)
        yield durations
        for field_name, count in sorted(stored_calls.items()):
            provider, _, outcome = field_name.partition("|")
            calls.add_metric([provider, outcome], count)
        yield calls


def cumulative_histograms(
    fields: dict[str, float],
) -> dict[str, tuple[list[tuple[str, float]], float]]:
    """Stored per-bucket counts → cumulative Prometheus buckets and the sum, per step type."""
    per_type: dict[str, dict[str, float]] = {}
    for field_name, value in fields.items():
        step_type, _, key = field_name.partition("|")
        per_type.setdefault(step_type, {})[key] = value
    result = {}
    for step_type, values in per_type.items():
        running = 0.0
        buckets = []
        for bound in [*map(repr, STEP_DURATION_BUCKETS), "+Inf"]:
            running += values.get(bound, 0.0)
            buckets.append((bound, running))
        result[step_type] = (buckets, values.get("sum", 0.0))
    return result
