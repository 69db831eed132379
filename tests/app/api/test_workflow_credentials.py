"""Credential names in step configs are checked when the workflow is saved (SPEC §8)."""

from __future__ import annotations

import pytest

from tests.app.api import assert_error
from tests.conftest import make_entity_type
from tests.peers import new_webhook_secret

WORKFLOWS = "/api/v1/workflows"


def _credential(client, keys, name, type_, data):
    body = {"name": name, "type": type_, "data": data}
    response = client.post("/api/v1/credentials", json=body, headers=keys.header("editor"))
    assert response.status_code == 201, response.json


def _save(client, keys, steps, **body):
    entity_type = make_entity_type(client, keys)
    return client.post(
        WORKFLOWS,
        json={"name": "W", "entityTypeId": entity_type["id"], "steps": steps, **body},
        headers=keys.header("editor"),
    )


AI = {"provider": "openai", "model": "m", "prompt": "p", "outputField": "o"}


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"type": "ai_generate", "config": {**AI, "credential": "nope"}}, "config.credential"),
        (
            {
                "type": "publish",
                "config": {"target": {"url": "https://h.example/", "credential": "nope"}},
            },
            "config.target.credential",
        ),
        (
            {
                "type": "notify",
                "config": {"channel": "slack", "credential": "nope", "message": "m"},
            },
            "config.credential",
        ),
    ],
)
def test_an_unknown_credential_is_a_422_naming_the_field(client, keys, step, path):
    steps = [{"type": "transform", "config": {"set": {"a": 1}}}, step]
    body = assert_error(_save(client, keys, steps), 422)
    assert list(body["errors"]) == [f"steps[1].{path}"]
    assert "No credential named 'nope'" in body["errors"][f"steps[1].{path}"][0]


def test_known_credentials_of_the_right_type_save(client, keys):
    _credential(client, keys, "oa", "openai", {"apiKey": "sk-abc"})
    _credential(client, keys, "hook", "webhook", {"secret": new_webhook_secret()})
    steps = [
        {"type": "ai_generate", "config": {**AI, "credential": "oa"}},
        {
            "type": "publish",
            "config": {"target": {"url": "https://h.example/", "credential": "hook"}},
        },
        {"type": "notify", "config": {"channel": "webhook", "credential": "hook", "message": "m"}},
    ]
    finish = {"channel": "webhook", "credential": "hook"}
    response = _save(client, keys, steps, settings={"notifyOnFinish": finish})
    assert response.status_code == 201, response.json


def test_a_credential_of_the_wrong_type_is_refused(client, keys):
    _credential(client, keys, "hook", "webhook", {"secret": new_webhook_secret()})
    body = assert_error(
        _save(client, keys, [{"type": "ai_generate", "config": {**AI, "credential": "hook"}}]), 422
    )
    assert body["errors"] == {
        "steps[0].config.credential": ["Credential 'hook' is of type 'webhook', not 'openai'."]
    }


def test_updates_and_run_summaries_are_checked_too(client, keys):
    created = _save(client, keys, [{"type": "transform", "config": {"set": {"a": 1}}}]).json
    url = f"{WORKFLOWS}/{created['id']}"
    steps = [
        {
            "type": "notify",
            "config": {
                "channel": "email",
                "to": ["a@example.com"],
                "credential": "mail",
                "message": "m",
            },
        }
    ]
    body = assert_error(
        client.patch(url, json={"steps": steps}, headers=keys.header("editor")), 422
    )
    assert list(body["errors"]) == ["steps[0].config.credential"]
    finish = {"channel": "slack", "credential": "gone"}
    body = assert_error(
        client.patch(
            url, json={"settings": {"notifyOnFinish": finish}}, headers=keys.header("editor")
        ),
        422,
    )
    assert list(body["errors"]) == ["settings.notifyOnFinish.credential"]
    assert client.get(url, headers=keys.header()).json["version"] == 1


def test_another_workspaces_credential_does_not_count(client, keys):
    other = {"Authorization": f"Bearer {keys.other_admin}"}
    body = {"name": "oa", "type": "openai", "data": {"apiKey": "sk-other"}}
    assert client.post("/api/v1/credentials", json=body, headers=other).status_code == 201
    response = _save(client, keys, [{"type": "ai_generate", "config": {**AI, "credential": "oa"}}])
    assert list(assert_error(response, 422)["errors"]) == ["steps[0].config.credential"]
