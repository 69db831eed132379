"""``POST /workflows/generate`` against a local OpenAI-format server streaming tool calls."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conveyor_client import Conveyor, Forbidden
from flask.testing import FlaskClient

from app.config import Settings
from tests.clients.live import live_url as live_url  # a fixture
from tests.conftest import Keys, make_entity_type
from tests.peers import ToolCallStreamPeer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test peers listen on 127.0.0.1, which outbound calls refuse unless allowed."""
    return dataclasses.replace(settings, outbound_allow_hosts=("127.0.0.1",))


VALID_CALLS: list[tuple[str, Any]] = [
    ("setName", {"name": "Describe and check products", "description": "From a sentence."}),
    (
        "addStep",
        {
            "id": "describe",
            "type": "ai_generate",
            "config": {
                "provider": "template",
                "prompt": "A short description of {{ entity.data.title }}",
                "outputField": "description",
            },
        },
    ),
    (
        "addStep",
        {
            "id": "check",
            "type": "validate",
            "name": "Description present",
            "config": {"rules": [{"field": "description", "required": True, "minLength": 5}]},
        },
    ),
    ("setSettings", {"concurrency": 20, "retry": {"maxAttempts": 3, "backoffSeconds": 1}}),
    ("explain", {"text": "Writes a description, then checks it is there."}),
]


def _credential(client: FlaskClient, keys: Keys, base_url: str, name: str = "llm") -> None:
    response = client.post(
        "/api/v1/credentials",
        json={
            "name": name,
            "type": "openai",
            "data": {"apiKey": "test-key"},
            "settings": {"baseUrl": base_url},
        },
        headers=keys.header("editor"),
    )
    assert response.status_code == 201, response.json


def _generate(client: FlaskClient, keys: Keys, entity_type_id: str, **extra: Any) -> Any:
    return client.post(
        "/api/v1/workflows/generate",
        json={"prompt": "Describe each product, then check it", "entityTypeId": entity_type_id}
        | extra,
        headers=keys.header("editor"),
        buffered=False,
    )


def _lines(response: Any) -> Iterator[dict[str, Any]]:
    buffer = b""
    for chunk in response.response:
        buffer += chunk if isinstance(chunk, bytes) else chunk.encode()
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


@pytest.fixture
def entity_type(client: FlaskClient, keys: Keys) -> dict[str, Any]:
    return make_entity_type(client, keys)


def test_a_valid_stream_ends_in_done_with_a_definition_that_saves(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    with ToolCallStreamPeer(VALID_CALLS, pieces=4) as peer:
        _credential(client, keys, peer.base_url)
        response = _generate(client, keys, entity_type["id"], model="gpt-test")
        assert response.status_code == 200
        assert response.mimetype == "application/x-ndjson"
        ops = list(_lines(response))
    assert [op["op"] for op in ops] == [
        "setName", "addStep", "addStep", "setSettings", "explain", "done"
    ]  # fmt: skip
    assert ops[1]["step"]["id"] == "describe" and ops[2]["step"]["type"] == "validate"
    workflow = ops[-1]["workflow"]
    assert workflow["name"] == "Describe and check products"
    assert workflow["entityTypeId"] == entity_type["id"]
    assert [s["id"] for s in workflow["steps"]] == ["describe", "check"]
    # Structured output: streamed tool calls the model must use, with the credential's key.
    sent = peer.requests[0]
    assert sent["headers"]["Authorization"] == "Bearer test-key"
    assert sent["body"]["stream"] is True and sent["body"]["tool_choice"] == "required"
    assert sent["body"]["model"] == "gpt-test"
    assert {t["function"]["name"] for t in sent["body"]["tools"]} == {
        "setName", "addStep", "setSettings", "explain"
    }  # fmt: skip
    saved = client.post("/api/v1/workflows", json=workflow, headers=keys.header("editor"))
    assert saved.status_code == 201, saved.json
    assert saved.json["settings"]["concurrency"] == 20


@pytest.mark.parametrize(
    ("bad_step", "path"),
    [
        ({"id": "write", "type": "ai_generate", "config": {"provider": "template"}}, "prompt"),
        ({"id": "teleport", "type": "teleport", "config": {}}, "type"),
        ({"id": "bad id!", "type": "transform", "config": {"status": "x"}}, "id"),
    ],
)
def test_an_invalid_step_yields_an_error_naming_the_path(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any], bad_step: Any, path: str
) -> None:
    calls = [VALID_CALLS[0], VALID_CALLS[1], ("addStep", bad_step), VALID_CALLS[4]]
    with ToolCallStreamPeer(calls) as peer:
        _credential(client, keys, peer.base_url)
        ops = list(_lines(_generate(client, keys, entity_type["id"])))
    assert [op["op"] for op in ops] == ["setName", "addStep", "error"]
    error = ops[-1]
    expected = f"steps[1].config.{path}" if path == "prompt" else f"steps[1].{path}"
    assert error["path"] == expected
    assert expected in error["errors"]
    assert error["message"]
    listed = client.get("/api/v1/workflows", headers=keys.header("viewer")).json
    assert listed == []  # nothing saved


def test_invalid_settings_name_their_path(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    calls = [VALID_CALLS[1], ("setSettings", {"toleratedFailurePercentage": 250})]
    with ToolCallStreamPeer(calls) as peer:
        _credential(client, keys, peer.base_url)
        ops = list(_lines(_generate(client, keys, entity_type["id"])))
    assert ops[-1]["op"] == "error"
    assert ops[-1]["path"] == "settings.toleratedFailurePercentage"


def test_the_first_line_leaves_before_generation_ends(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    # One fragment per call; the peer holds the stream after its first chunk until released.
    with ToolCallStreamPeer(VALID_CALLS, pieces=1, hold_after=1) as peer:
        _credential(client, keys, peer.base_url)
        lines = _lines(_generate(client, keys, entity_type["id"]))
        first = next(lines)
        assert first == {
            "op": "setName",
            "name": "Describe and check products",
            "description": "From a sentence.",
        }
        assert peer.released_early is None  # the model is still generating
        peer.release.set()
        rest = list(lines)
    assert peer.released_early is True
    assert rest[-1]["op"] == "done"


def test_without_an_llm_credential_it_is_422_naming_what_to_add(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    response = _generate(client, keys, entity_type["id"])
    assert response.status_code == 422
    assert "openai" in response.json["message"]
    assert "credential" in response.json["errors"]
    named = _generate(client, keys, entity_type["id"], credential="missing")
    assert named.status_code == 422
    assert "missing" in named.json["message"]


def test_generation_needs_the_editor_role_and_a_known_entity_type(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    response = client.post(
        "/api/v1/workflows/generate",
        json={"prompt": "x", "entityTypeId": entity_type["id"]},
        headers=keys.header("executor"),
    )
    assert response.status_code == 403
    unknown = _generate(client, keys, "et_nope")
    assert unknown.status_code == 422
    assert "entityTypeId" in unknown.json["errors"]


def test_a_provider_error_ends_the_stream_with_an_error_op(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    with ToolCallStreamPeer(VALID_CALLS, api_key="another-key") as peer:
        _credential(client, keys, peer.base_url)
        ops = list(_lines(_generate(client, keys, entity_type["id"])))
    assert ops == [
        {
            "op": "error",
            "path": "provider",
            "message": ops[0]["message"],
            "errors": {},
        }
    ]
    assert "401" in ops[0]["message"]
    assert "test-key" not in ops[0]["message"]


def test_the_python_client_streams_the_operations(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any], live_url: str
) -> None:
    with ToolCallStreamPeer(VALID_CALLS) as peer, Conveyor(live_url, keys.editor) as conveyor:
        _credential(client, keys, peer.base_url)
        ops = list(conveyor.workflows.generate("Describe", entity_type_id=entity_type["id"]))
        assert ops[-1]["op"] == "done"
        saved = conveyor.workflows.create(ops[-1]["workflow"])
    assert saved["stepsCount"] == 2
    with Conveyor(live_url, keys.viewer) as viewer, pytest.raises(Forbidden):
        list(viewer.workflows.generate("Describe", entity_type_id=entity_type["id"]))


def test_a_tool_call_that_never_forms_json_is_an_error(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any]
) -> None:
    calls = [VALID_CALLS[1], ("addStep", '{"id": "cut", "type": "transform", "config": ')]
    with ToolCallStreamPeer(calls) as peer:
        _credential(client, keys, peer.base_url)
        ops = list(_lines(_generate(client, keys, entity_type["id"])))
    assert [op["op"] for op in ops] == ["addStep", "error"]
    assert ops[-1]["path"] == "op[1]"
    assert "addStep" in ops[-1]["message"]


def test_the_cli_prints_operations_and_saves(
    client: FlaskClient, keys: Keys, entity_type: dict[str, Any], live_url: str
) -> None:
    from click.testing import CliRunner

    from app.cli import main

    env = {"CONVEYOR_URL": live_url, "CONVEYOR_API_KEY": keys.editor}
    with ToolCallStreamPeer(VALID_CALLS) as peer:
        _credential(client, keys, peer.base_url)
        result = CliRunner().invoke(
            main,
            ["workflows", "generate", "Describe", "--entity-type", entity_type["id"], "--save"],
            env=env,
        )
    assert result.exit_code == 0, result.output
    ops = [json.loads(line) for line in result.stdout.splitlines()]
    assert ops[-1]["op"] == "done"
    assert "created" in result.stderr
    listed = client.get("/api/v1/workflows", headers=keys.header("viewer")).json
    assert [w["name"] for w in listed] == ["Describe and check products"]
    with ToolCallStreamPeer([("addStep", {"id": "x", "type": "teleport", "config": {}})]) as bad:
        client.put(
            f"/api/v1/credentials/{_credential_id(client, keys)}",
            json={"name": "llm", "settings": {"baseUrl": bad.base_url}},
            headers=keys.header("editor"),
        )
        failed = CliRunner().invoke(
            main, ["workflows", "generate", "X", "--entity-type", entity_type["id"]], env=env
        )
    assert failed.exit_code == 1
    assert json.loads(failed.stdout.splitlines()[-1])["path"] == "steps[0].type"


def _credential_id(client: FlaskClient, keys: Keys) -> str:
    listed = client.get("/api/v1/credentials", headers=keys.header("editor")).json
    return str(listed[0]["id"])
