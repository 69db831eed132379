"""Helpers shared by the console tests: a signed-in test client, a workflow with a known
failure, and waiting for a run through the API."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Keys, make_entities, make_entity_type, make_workflow

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
# Entities priced 250 or more fail this rule: with prices 0..N-1 the failures are known.
PRICE_LIMIT = 250
FAILURE = "price must be under 250"
VALIDATE_STEPS: list[dict[str, Any]] = [
    {
        "id": "check",
        "name": "Check price",
        "type": "validate",
        "config": {
            "rules": [
                {
                    "field": "price",
                    "expression": f"entity.data.price < {PRICE_LIMIT}",
                    "message": FAILURE,
                }
            ]
        },
    },
    {"id": "mark", "type": "transform", "config": {"set": {"checked": True}}},
]


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def sign_in(client: FlaskClient, key: str) -> str:
    """Sign the test client in; the session's CSRF token."""
    page = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in", data={"api_key": key, "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 302, response.text
    return csrf_of(client.get("/console/workflows").text)


def make_failing_workflow(client: FlaskClient, keys: Keys, count: int) -> dict[str, Any]:
    """A workflow over ``count`` products priced 0..count-1; those >= 250 fail validation."""
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], count)
    return make_workflow(
        client, keys, entity_type["id"], VALIDATE_STEPS, name="Check prices", status="active"
    )


def wait_for_run(
    client: FlaskClient, keys: Keys, workflow_id: str, run_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    """Poll the API until the run is final (the embedded queue runs it in threads)."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = client.get(
            f"/api/v1/workflows/{workflow_id}/runs/{run_id}", headers=keys.header("viewer")
        ).json
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        time.sleep(0.05)
    pytest.fail(f"run {run_id} did not finish: {run}")
