"""Bad input gets a clear 4xx in the SPEC shape, never a 500 (issue 10 item 9).

Each case is one a fuzzer found: strings the database cannot store, numbers beyond what
it holds, JSON that is not JSON, forged cursors, bodies declared required but missing.
Run on PostgreSQL too (``CONVEYOR_TEST_DATABASE_URL``): there NUL reached the driver.
"""

from __future__ import annotations

import base64
import json

import pytest

from app import jsonbody
from tests.app.api import assert_error
from tests.conftest import make_entities, make_entity_type, make_workflow

ENTITY_TYPES = "/api/v1/entity-types"
ENTITIES = "/api/v1/entities"


def _post_raw(client, keys, url, text, role="editor", method="post"):
    return getattr(client, method)(
        url,
        data=text.encode("utf-8", "surrogatepass"),
        content_type="application/json",
        headers=keys.header(role),
    )


def _cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


# --- strings the database cannot store ---------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "a\\u0000b", "schema": {}}',  # NUL in a value
        '{"name": "ok", "schema": {"a\\u0000": 1}}',  # NUL in a key, nested
        '{"name": "\\ud800", "schema": {}}',  # a lone surrogate
        '{"name": "ok", "schema": {"\\udfff": [1, "x"]}}',  # a lone low surrogate, as a key
    ],
)
def test_nul_and_lone_surrogates_in_a_body_are_422(client, keys, text):
    body = assert_error(_post_raw(client, keys, ENTITY_TYPES, text), 422)
    assert "NUL" in body["message"] or "surrogate" in body["message"]


def test_a_valid_surrogate_pair_is_a_character_and_is_accepted(client, keys):
    response = _post_raw(client, keys, ENTITY_TYPES, '{"name": "box \\ud83d\\udce6", "schema": {}}')
    assert response.status_code == 201, response.json
    assert response.json["name"] == "box \U0001f4e6"


def test_nul_in_an_entity_body_names_its_path(client, keys):
    entity_type = make_entity_type(client, keys)
    text = json.dumps({"entityTypeId": entity_type["id"], "data": {"title": "a\x00"}})
    body = assert_error(_post_raw(client, keys, ENTITIES, text), 422)
    assert "data.title" in body["errors"]


def test_nul_in_query_and_path_parameters_is_422(client, keys):
    assert_error(client.get(f"{ENTITIES}?status=a%00b", headers=keys.header()), 422)
    assert_error(client.get(f"{ENTITIES}?st%00atus=a", headers=keys.header()), 422)
    assert_error(client.get(f"{ENTITIES}/ent_%00x", headers=keys.header()), 422)
    assert_error(client.get(f"{ENTITY_TYPES}/et_%00", headers=keys.header()), 422)


def test_nul_in_a_header_is_422(client, keys):
    entity_type = make_entity_type(client, keys)
    response = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"title": "x"}},
        headers={**keys.header("editor"), "Idempotency-Key": "k\x00ey"},
    )
    assert_error(response, 422)


# --- numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
def test_non_finite_numbers_in_json_are_400(client, keys, number):
    entity_type = make_entity_type(client, keys)
    text = f'{{"entityTypeId": "{entity_type["id"]}", "data": {{"title": "x", "price": {number}}}}}'
    assert_error(_post_raw(client, keys, ENTITIES, text), 400)


def test_a_5000_digit_number_in_json_is_refused(client, keys):
    entity_type = make_entity_type(client, keys)
    text = f'{{"entityTypeId": "{entity_type["id"]}", "data": {{"price": {"9" * 5000}}}}}'
    assert_error(_post_raw(client, keys, ENTITIES, text), 400)


@pytest.mark.parametrize("value", [str(2**63), str(-(2**63) - 1), "9" * 5000, "1e3", "nan"])
def test_integer_query_parameters_beyond_64_bits_are_422(client, keys, value):
    body = assert_error(client.get(f"{ENTITIES}?updatedSince={value}", headers=keys.header()), 422)
    assert "updatedSince" in body["errors"]


def test_integer_query_parameter_at_the_64_bit_bound_is_accepted(client, keys):
    response = client.get(f"{ENTITIES}?updatedSince={2**63 - 1}", headers=keys.header())
    assert response.status_code == 200, response.json
    assert response.json == []


# --- JSON that is not JSON, and bodies that are required ------------------------------------


def test_json_nested_10000_deep_is_400(client, keys):
    text = '{"name": "deep", "schema": ' + "[" * 10_000 + "]" * 10_000 + "}"
    body = assert_error(_post_raw(client, keys, ENTITY_TYPES, text), 400)
    assert "deep" in body["message"]


def test_json_nested_just_beyond_the_bound_is_400_and_within_it_is_accepted(client, keys):
    depth = jsonbody.MAX_DEPTH
    entity_type = make_entity_type(client, keys, schema={})

    def entity(levels):
        data = "1"
        for _ in range(levels):
            data = '{"a": ' + data + "}"
        return f'{{"entityTypeId": "{entity_type["id"]}", "data": {data}}}'

    assert_error(_post_raw(client, keys, ENTITIES, entity(depth)), 400)
    accepted = _post_raw(client, keys, ENTITIES, entity(depth - 2))
    assert accepted.status_code == 201, accepted.json


def test_request_get_json_uses_the_same_strict_loader(app):
    with app.test_request_context(
        "/", method="POST", data='{"a": NaN}', content_type="application/json"
    ):
        from flask import request

        assert request.get_json(silent=True) is None
        with pytest.raises(Exception) as raised:
            request.get_json()
        assert getattr(raised.value, "code", None) == 400


@pytest.mark.parametrize("body", [None, b"", b"   "])
def test_a_required_body_is_required(client, keys, body):
    entity_type = make_entity_type(client, keys)
    response = client.patch(
        f"{ENTITY_TYPES}/{entity_type['id']}",
        data=body,
        content_type="application/json",
        headers=keys.header("editor"),
    )
    assert_error(response, 400)
    after = client.get(f"{ENTITY_TYPES}/{entity_type['id']}", headers=keys.header()).json
    assert after == entity_type


def test_a_body_that_is_not_json_is_refused(client, keys):
    entity_type = make_entity_type(client, keys)
    response = client.patch(
        f"{ENTITY_TYPES}/{entity_type['id']}",
        data="name=x",
        content_type="application/x-www-form-urlencoded",
        headers=keys.header("editor"),
    )
    assert_error(response, 400)


# --- forged cursors ---------------------------------------------------------------------


@pytest.mark.parametrize("position", ["\x00", "ent_\x00", "\ud800"])
def test_a_cursor_that_decodes_to_an_unstorable_string_is_422(client, keys, position):
    cursor = base64.urlsafe_b64encode(position.encode("utf-8", "surrogatepass")).decode()
    response = client.get(f"{ENTITIES}?cursor={cursor}", headers=keys.header())
    body = assert_error(response, 422)
    assert "cursor" in body["errors"]


@pytest.mark.parametrize("position", [str(10**22), str(-(10**22)), "9" * 5000, "x1"])
def test_a_cursor_that_decodes_to_an_impossible_integer_is_422(client, keys, position):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 1)
    workflow = make_workflow(
        client,
        keys,
        entity_type["id"],
        [{"id": "t", "type": "transform", "config": {"set": {"seen": True}}}],
    )
    started = client.post(
        f"/api/v1/workflows/{workflow['id']}/run",
        json={"entityIds": [entities[0]["id"]]},
        headers=keys.header("executor"),
    )
    assert started.status_code == 202, started.json
    job_id = started.json["jobId"]
    body = assert_error(
        client.get(f"/api/v1/jobs/{job_id}/logs?cursor={_cursor(position)}", headers=keys.header()),
        422,
    )
    assert "cursor" in body["errors"]


def test_a_forged_but_decodable_cursor_is_422(client, keys):
    response = client.get(f"{ENTITIES}?cursor=!!!not-base64", headers=keys.header())
    assert_error(response, 422)


# --- methods, sizes, time zones ---------------------------------------------------------------


def test_405_carries_an_allow_header(client, keys):
    response = client.put(ENTITIES, json={}, headers=keys.header("editor"))
    assert_error(response, 405)
    allowed = {m.strip() for m in response.headers["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "PUT" not in allowed


def test_a_chunked_body_over_the_limit_is_413(app, client, keys):
    limit = app.config["MAX_CONTENT_LENGTH"]
    payload = json.dumps({"name": "big", "schema": {"description": "x" * limit}}).encode()

    def chunks():
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    import io

    stream = io.BytesIO(b"".join(chunks()))
    response = client.post(
        ENTITY_TYPES,
        input_stream=stream,
        content_type="application/json",
        headers={**keys.header("editor"), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_error(response, 413)


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "Mars/Olympus"])
def test_trigger_time_zone_must_be_an_iana_zone(client, keys, zone):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(
        client,
        keys,
        entity_type["id"],
        [{"id": "t", "type": "transform", "config": {"set": {"seen": True}}}],
    )
    response = client.post(
        "/api/v1/triggers",
        json={"workflowId": workflow["id"], "type": "cron", "cron": "0 9 * * *", "timezone": zone},
        headers=keys.header("editor"),
    )
    body = assert_error(response, 422)
    assert "timezone" in body["errors"]


def test_an_integer_path_part_beyond_the_column_is_404(client, keys):
    entity_type = make_entity_type(client, keys)
    workflow = make_workflow(
        client,
        keys,
        entity_type["id"],
        [{"id": "t", "type": "transform", "config": {"set": {"a": 1}}}],
    )
    url = f"/api/v1/workflows/{workflow['id']}/revisions"
    assert client.get(f"{url}/1", headers=keys.header()).status_code == 200
    for version in (2**31, 2**63, 10**30):
        assert_error(client.get(f"{url}/{version}", headers=keys.header()), 404)
        assert_error(client.get(f"{url}/{version}/diff", headers=keys.header()), 404)
