"""One error shape everywhere: ``{code, status, message, errors}``."""

import pytest
from sqlalchemy.exc import OperationalError

from tests.app.api import assert_error
from tests.conftest import make_entity_type

WRITES = [
    ("post", "/api/v1/entity-types"),
    ("post", "/api/v1/entities"),
    ("post", "/api/v1/entities/bulk"),
    ("post", "/api/v1/workflows"),
    ("post", "/api/v1/api-keys"),
]


def test_unknown_routes_are_404(client, keys):
    for path in ("/api/v1/nothing-here", "/api/v2/entities", "/nothing", "/api/v1/entities/a/b"):
        assert_error(client.get(path, headers=keys.header()), 404)
        assert_error(client.get(path), 404)


def test_unknown_ids_are_404(client, keys):
    for path in (
        "/api/v1/entity-types/et_nope",
        "/api/v1/entities/ent_nope",
        "/api/v1/workflows/wf_nope",
        "/api/v1/step-types/nope",
    ):
        body = assert_error(client.get(path, headers=keys.header()), 404)
        assert body["status"] == "Not Found"


def test_wrong_methods_are_405(client, keys):
    for method, path in [
        ("put", "/api/v1/entities"),
        ("delete", "/api/v1/entities"),
        ("put", "/api/v1/entities/ent_x"),
        ("post", "/api/v1/me"),
        ("patch", "/api/v1/api-keys/key_x"),
        ("post", "/healthz"),
    ]:
        response = getattr(client, method)(path, headers=keys.header())
        assert assert_error(response, 405)["status"] == "Method Not Allowed"


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_malformed_json_is_400(client, keys, method, path):
    response = getattr(client, method)(
        path, data='{"name": "x",', content_type="application/json", headers=keys.header()
    )
    assert "JSON" in assert_error(response, 400)["message"]


def test_a_json_body_that_is_not_an_object_is_rejected(client, keys):
    for body in ("[]", '"text"', "42", "null"):
        response = client.post(
            "/api/v1/entity-types",
            data=body,
            content_type="application/json",
            headers=keys.header(),
        )
        assert "_schema" in assert_error(response, 422)["errors"], body
    assert client.get("/api/v1/entity-types", headers=keys.header()).json == []


@pytest.mark.parametrize(("method", "path"), WRITES)
def test_a_body_over_the_limit_is_413(client, keys, method, path):
    # The test settings cap bodies at 1 MiB.
    body = b'{"name": "' + b"x" * (1024 * 1024) + b'"}'
    response = getattr(client, method)(
        path, data=body, content_type="application/json", headers=keys.header()
    )
    assert assert_error(response, 413)["status"] == "Request Entity Too Large"


def test_a_body_under_the_limit_is_accepted(client, keys):
    entity_type = make_entity_type(client, keys, schema=None)
    blob = "x" * (1024 * 1024 - 200)
    response = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"blob": blob}},
        headers=keys.header("editor"),
    )
    assert response.status_code == 201


def test_validation_errors_name_each_field_in_camel_case(client, keys):
    response = client.post(
        "/api/v1/workflows",
        json={"name": "", "entity_type_id": "x", "steps": [{"type": 1}]},
        headers=keys.header("editor"),
    )
    body = assert_error(response, 422)
    assert body["status"] == "Unprocessable Entity"
    assert set(body["errors"]) == {"name", "entity_type_id", "entityTypeId", "steps[0].type"}
    assert all(isinstance(v, list) and v for v in body["errors"].values())
    assert "name" in body["message"]


def test_auth_errors_have_the_shape(client, keys):
    assert assert_error(client.get("/api/v1/me"), 401)["status"] == "Unauthorized"
    response = client.get("/api/v1/api-keys", headers=keys.header("viewer"))
    assert assert_error(response, 403)["status"] == "Forbidden"


def test_conflicts_and_preconditions_have_the_shape(client, keys):
    entity_type = make_entity_type(client, keys)
    entity = client.post(
        "/api/v1/entities",
        json={"entityTypeId": entity_type["id"], "data": {"title": "A"}},
        headers=keys.header("editor"),
    ).json
    response = client.delete(
        f"/api/v1/entity-types/{entity_type['id']}", headers=keys.header("editor")
    )
    assert assert_error(response, 409)["status"] == "Conflict"
    response = client.patch(
        f"/api/v1/entities/{entity['id']}",
        json={"status": "x"},
        headers={**keys.header("editor"), "If-Match": '"7"'},
    )
    assert assert_error(response, 412)["status"] == "Precondition Failed"


def test_an_unexpected_error_is_a_500_in_the_same_shape(app, keys):
    def boom():
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/v1/_boom", "boom", boom)
    response = app.test_client().get("/api/v1/_boom")
    body = assert_error(response, 500)
    assert "secret internals" not in response.get_data(as_text=True)
    assert body["status"] == "Internal Server Error"


def test_a_database_outage_is_503_with_retry_after(app, keys):
    def outage():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    app.add_url_rule("/api/v1/_outage", "outage", outage)
    response = app.test_client().get("/api/v1/_outage")
    assert_error(response, 503)
    assert int(response.headers["Retry-After"]) > 0
