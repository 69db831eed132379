"""``GET /metrics``: what it reports after real runs, and the stores behind it."""

from __future__ import annotations

import fakeredis
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from app import metrics
from tests.conftest import make_entities, make_entity_type, make_workflow
from tests.jobs.test_run_engine import STEPS, wait_for_run


def scrape(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_metrics_count_a_finished_run_and_its_steps(client, keys):
    before = scrape(client)
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 20)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    started = client.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"entityIds": [e["id"] for e in entities]},
        headers=keys.header("executor"),
    )
    assert started.status_code == 202
    run = wait_for_run(client, keys, workflow["id"], started.json["runId"])
    assert run["status"] == "completed"
    after = scrape(client)

    assert after[("conveyor_runs", (("status", "completed"),))] == 1
    assert after[("conveyor_runs", (("status", "running"),))] == 0
    processed = ("conveyor_entities_processed_total", (("outcome", "completed"),))
    assert after[processed] == 20
    assert after[("conveyor_entities_waiting", ())] == 0
    assert ("conveyor_queue_depth", ()) in after

    def added(step_type: str, le: str) -> float:
        key = ("conveyor_step_duration_seconds_bucket", (("le", le), ("type", step_type)))
        return after.get(key, 0) - before.get(key, 0)

    # 20 entities through transform, validate and condition; 15 of them on to publish.
    for step_type, count in (("transform", 20), ("validate", 20), ("condition", 20)):
        assert added(step_type, "+Inf") == count
    assert added("publish", "+Inf") == 15
    buckets = [added("transform", repr(b)) for b in metrics.STEP_DURATION_BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert buckets[-1] == 20  # nothing in the test's steps takes a minute


def test_a_redis_store_is_shared_between_clients():
    server = fakeredis.FakeServer()
    worker_a = metrics.RedisStore(fakeredis.FakeRedis(server=server))
    worker_b = metrics.RedisStore(fakeredis.FakeRedis(server=server))
    web = metrics.RedisStore(fakeredis.FakeRedis(server=server))
    metrics.observe_step_records(worker_a, [{"type": "transform", "durationMs": 3}])
    metrics.observe_step_records(worker_b, [{"type": "transform", "durationMs": 700}])
    metrics.observe_provider_call(worker_b, "openai", "rate_limited")
    histograms = metrics.cumulative_histograms(web.read(metrics.STEP_DURATIONS))
    buckets, total = histograms["transform"]
    as_dict = dict(buckets)
    assert as_dict["0.005"] == 1 and as_dict["0.5"] == 1 and as_dict["1.0"] == 2
    assert as_dict["+Inf"] == 2 and abs(total - 0.703) < 1e-9
    assert web.read(metrics.PROVIDER_CALLS) == {"openai|rate_limited": 1.0}


def test_metrics_never_fail_the_work_when_redis_is_down():
    unreachable = metrics.RedisStore(Redis(port=1, socket_connect_timeout=0.2))
    metrics.observe_step_records(unreachable, [{"type": "publish", "durationMs": 1}])
    metrics.observe_provider_call(unreachable, "openai", "ok")


def test_local_store_adds_up():
    store = metrics.LocalStore()
    store.add("x", {"a": 1})
    store.add("x", {"a": 2, "b": 1.5})
    assert store.read("x") == {"a": 3, "b": 1.5}
    assert store.read("missing") == {}
