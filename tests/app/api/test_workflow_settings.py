"""Workflow settings: ``keepPartialChanges`` (stored as ``keep_partial_changes``)."""

from __future__ import annotations

from app.models import Workflow
from tests.app.api import assert_error
from tests.conftest import make_entity_type

WORKFLOWS = "/api/v1/workflows"
STEPS = [{"type": "transform", "config": {"set": {"a": 1}}}]


def _save(client, keys, **settings):
    entity_type = make_entity_type(client, keys)
    body = {"name": "W", "entityTypeId": entity_type["id"], "steps": STEPS, "settings": settings}
    return client.post(WORKFLOWS, json=body, headers=keys.header("editor"))


def test_keep_partial_changes_defaults_to_false(client, keys, session):
    created = _save(client, keys).json
    assert created["settings"]["keepPartialChanges"] is False
    assert session.get(Workflow, created["id"]).settings["keep_partial_changes"] is False


def test_keep_partial_changes_is_stored_snake_case(client, keys, session):
    created = _save(client, keys, keepPartialChanges=True).json
    assert created["settings"]["keepPartialChanges"] is True
    assert session.get(Workflow, created["id"]).settings["keep_partial_changes"] is True
    session.rollback()  # end the read, so the API can write
    url = f"{WORKFLOWS}/{created['id']}"
    patched = client.patch(
        url, json={"settings": {"keepPartialChanges": False}}, headers=keys.header("editor")
    )
    assert patched.json["settings"]["keepPartialChanges"] is False


def test_keep_partial_changes_is_a_boolean(client, keys):
    body = assert_error(_save(client, keys, keepPartialChanges="sometimes"), 422)
    assert list(body["errors"]) == ["settings.keepPartialChanges"]
