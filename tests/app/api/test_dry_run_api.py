"""Dry runs and samples through the API (SPEC 10): the request, the run, its job and items.

What the engine does in a dry run (no entity written, nothing delivered, each item's
would-be ``changes``) is tested with the engine; here: what the API accepts and shows.
"""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlmodel import col

from app.models import RunItem, RunSelection
from app.services.runs import insert_run_items, spread_sample
from tests.app.api import assert_error
from tests.conftest import RecordingQueue, make_entities, make_entity_type, make_workflow

STEPS = [{"id": "t", "type": "transform", "config": {"set": {"seen": True}}}]
WORKFLOWS = "/api/v1/workflows"


@pytest.fixture
def queue(app):
    original = app.extensions["conveyor.queue"]
    recording = RecordingQueue()
    app.extensions["conveyor.queue"] = recording
    yield recording
    app.extensions["conveyor.queue"] = original


@pytest.fixture
def setup(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 20)
    workflow = make_workflow(client, keys, entity_type["id"], STEPS)
    return {"workflow": workflow["id"], "ids": [e["id"] for e in entities]}


def _start(client, keys, workflow_id, body, role="executor"):
    return client.post(f"{WORKFLOWS}/{workflow_id}/run", json=body, headers=keys.header(role))


def _selection(session, run_id):
    session.expire_all()
    selection = session.get(RunSelection, run_id)
    session.commit()
    return selection.entity_ids


def test_dry_run_on_a_sample_is_marked_and_spread(client, keys, session, setup, queue):
    response = _start(
        client, keys, setup["workflow"], {"entityIds": setup["ids"], "dryRun": True, "sample": 5}
    )
    assert response.status_code == 202, response.json
    run_id, job_id = response.json["runId"], response.json["jobId"]
    run = client.get(f"{WORKFLOWS}/{setup['workflow']}/runs/{run_id}", headers=keys.header()).json
    assert run["dryRun"] is True and run["progress"]["total"] == 5
    # Spread over the selection, in its order: every 4th of 20.
    assert _selection(session, run_id) == setup["ids"][::4]
    listed = client.get(f"{WORKFLOWS}/{setup['workflow']}/runs", headers=keys.header()).json
    assert [(r["id"], r["dryRun"]) for r in listed] == [(run_id, True)]
    job = client.get(f"/api/v1/jobs/{job_id}", headers=keys.header()).json
    assert job["dryRun"] is True
    plain = _start(client, keys, setup["workflow"], {"entityIds": setup["ids"][:2]}).json
    plain_run = client.get(
        f"{WORKFLOWS}/{setup['workflow']}/runs/{plain['runId']}", headers=keys.header()
    ).json
    assert plain_run["dryRun"] is False and plain_run["progress"]["total"] == 2
    assert (
        client.get(f"/api/v1/jobs/{plain['jobId']}", headers=keys.header()).json["dryRun"] is False
    )


def test_sample_with_a_filter_and_larger_than_the_selection(client, keys, session, setup, queue):
    everything = _start(client, keys, setup["workflow"], {"filter": {}, "sample": 100}).json
    assert sorted(_selection(session, everything["runId"])) == sorted(setup["ids"])
    three = _start(
        client, keys, setup["workflow"], {"filter": {"ids": setup["ids"][:10]}, "sample": 3}
    ).json
    assert _selection(session, three["runId"]) == [sorted(setup["ids"][:10])[i] for i in (0, 3, 6)]


def test_items_show_changes(client, keys, session, setup, queue):
    run_id = _start(
        client, keys, setup["workflow"], {"entityIds": setup["ids"][:2], "dryRun": True}
    ).json["runId"]
    insert_run_items(session=session, run_id=run_id)
    changes = {
        "patch": [{"op": "add", "path": "/seen", "value": True}],
        "requests": [],
    }
    session.execute(
        update(RunItem)
        .where(col(RunItem.run_id) == run_id, col(RunItem.seq) == 0)
        .values(status="completed", changes=changes)
    )
    session.commit()
    items = client.get(
        f"{WORKFLOWS}/{setup['workflow']}/runs/{run_id}/items", headers=keys.header()
    ).json
    assert [i["changes"] for i in items] == [changes, None]


def test_retry_of_a_dry_run_is_dry(client, keys, session, setup, queue):
    run_id = _start(
        client, keys, setup["workflow"], {"entityIds": setup["ids"][:3], "dryRun": True}
    ).json["runId"]
    url = f"{WORKFLOWS}/{setup['workflow']}/runs/{run_id}"
    assert client.post(f"{url}/cancel", headers=keys.header("executor")).status_code == 200
    retried = client.post(f"{url}/retry", headers=keys.header("executor")).json
    retry = client.get(
        f"{WORKFLOWS}/{setup['workflow']}/runs/{retried['runId']}", headers=keys.header()
    ).json
    assert retry["dryRun"] is True and retry["retryOf"] == run_id


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"sample": 0}, "sample"),
        ({"sample": -3}, "sample"),
        ({"sample": "some"}, "sample"),
        ({"sample": 100_001}, "sample"),
        ({"dryRun": "maybe"}, "dryRun"),
    ],
)
def test_bad_dry_run_or_sample_is_422(client, keys, setup, queue, extra, field):
    response = _start(client, keys, setup["workflow"], {"entityIds": setup["ids"], **extra})
    assert field in assert_error(response, 422)["errors"]


def test_spread_sample():
    ids = [str(i) for i in range(10)]
    assert spread_sample(ids, 10) == ids
    assert spread_sample(ids, 50) == ids
    assert spread_sample(ids, 1) == ["0"]
    assert spread_sample(ids, 2) == ["0", "5"]
    assert spread_sample(ids, 3) == ["0", "3", "6"]
    assert spread_sample([], 3) == []
