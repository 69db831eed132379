"""``/api/v1/api-keys``: admin-only keys, shown once and hashed at rest."""

from sqlalchemy import select
from sqlmodel import SQLModel

from app.models import ApiKey
from tests.app.api import assert_error
from tests.conftest import auth


def _create(client, keys, **body):
    response = client.post(
        "/api/v1/api-keys", json={"name": "ci", **body}, headers=keys.header("admin")
    )
    assert response.status_code == 201, response.json
    return response.json


def test_create_returns_the_full_key_once(client, keys):
    created = _create(client, keys, role="executor")
    assert created["key"].startswith("cvk_")
    assert created["key"].startswith(created["keyPrefix"])
    assert len(created["key"]) > len(created["keyPrefix"]) + 20
    assert created["id"].startswith("key_")
    assert created["role"] == "executor"
    assert created["name"] == "ci"
    assert isinstance(created["createdAt"], int)
    assert created["lastUsedAt"] is None

    me = client.get("/api/v1/me", headers=auth(created["key"]))
    assert me.status_code == 200
    assert me.json["key"]["id"] == created["id"]
    assert me.json["key"]["role"] == "executor"


def test_role_defaults_to_viewer(client, keys):
    created = _create(client, keys)
    assert created["role"] == "viewer"
    response = client.post("/api/v1/entity-types", json={"name": "X"}, headers=auth(created["key"]))
    assert_error(response, 403)


def test_the_key_is_never_in_get_responses(client, keys):
    created = _create(client, keys, role="editor")
    listing = client.get("/api/v1/api-keys", headers=keys.header("admin"))
    assert listing.status_code == 200
    text = listing.get_data(as_text=True)
    assert created["key"] not in text
    assert keys.admin not in text
    assert all("key" not in item for item in listing.json)
    row = next(item for item in listing.json if item["id"] == created["id"])
    assert row["keyPrefix"] == created["keyPrefix"]
    assert set(row) == {"id", "name", "role", "keyPrefix", "createdAt", "lastUsedAt"}
    me = client.get("/api/v1/me", headers=auth(created["key"]))
    assert created["key"] not in me.get_data(as_text=True)


def test_keys_are_hashed_at_rest(client, keys, session):
    created = _create(client, keys, role="admin")
    # Use it once so every write path (lastUsedAt) has run.
    assert client.get("/api/v1/me", headers=auth(created["key"])).status_code == 200
    secret_part = created["key"].removeprefix(created["keyPrefix"])
    for table in SQLModel.metadata.sorted_tables:
        for row in session.execute(select(table)):
            dumped = repr(tuple(row))
            for key in (created["key"], secret_part, keys.admin, keys.viewer):
                assert key not in dumped, f"a key is stored in clear in {table.name}"
    stored = session.get(ApiKey, created["id"])
    assert stored.key_hash != created["key"]
    assert len(stored.key_hash) == 64


def test_list_shows_every_key_of_the_workspace_only(client, keys):
    listing = client.get("/api/v1/api-keys", headers=keys.header("admin")).json
    assert sorted(item["role"] for item in listing) == ["admin", "editor", "executor", "viewer"]
    other = client.get("/api/v1/api-keys", headers=auth(keys.other_admin)).json
    assert [item["role"] for item in other] == ["admin"]
    assert not {item["id"] for item in listing} & {item["id"] for item in other}


def test_last_used_at_is_set_after_use(client, keys):
    created = _create(client, keys, role="viewer")

    def last_used():
        listing = client.get("/api/v1/api-keys", headers=keys.header("admin")).json
        return next(item for item in listing if item["id"] == created["id"])["lastUsedAt"]

    assert last_used() is None
    assert client.get("/api/v1/me", headers=auth(created["key"])).status_code == 200
    used = last_used()
    assert isinstance(used, int)
    assert used >= created["createdAt"]


def test_a_deleted_key_no_longer_authenticates(client, keys):
    created = _create(client, keys, role="editor")
    assert client.get("/api/v1/me", headers=auth(created["key"])).status_code == 200
    response = client.delete(f"/api/v1/api-keys/{created['id']}", headers=keys.header("admin"))
    assert response.status_code == 204
    assert response.get_data() == b""
    assert_error(client.get("/api/v1/me", headers=auth(created["key"])), 401)
    listing = client.get("/api/v1/api-keys", headers=keys.header("admin")).json
    assert created["id"] not in {item["id"] for item in listing}
    response = client.delete(f"/api/v1/api-keys/{created['id']}", headers=keys.header("admin"))
    assert_error(response, 404)


def test_api_keys_are_admin_only(client, keys):
    admin_key = client.get("/api/v1/me", headers=keys.header("admin")).json["key"]["id"]
    for role in ("viewer", "executor", "editor"):
        headers = keys.header(role)
        assert_error(client.get("/api/v1/api-keys", headers=headers), 403)
        response = client.post("/api/v1/api-keys", json={"name": "x"}, headers=headers)
        assert_error(response, 403)
        assert_error(client.delete(f"/api/v1/api-keys/{admin_key}", headers=headers), 403)
    assert client.get("/api/v1/me", headers=keys.header("admin")).status_code == 200


def test_api_keys_need_a_key(client, keys):
    assert_error(client.get("/api/v1/api-keys"), 401)
    assert_error(client.post("/api/v1/api-keys", json={"name": "x"}), 401)
    assert_error(client.get("/api/v1/api-keys", headers=auth("cvk_wrong")), 401)


def test_another_workspace_key_is_404(client, keys):
    mine = client.get("/api/v1/me", headers=keys.header("viewer")).json["key"]["id"]
    response = client.delete(f"/api/v1/api-keys/{mine}", headers=auth(keys.other_admin))
    assert_error(response, 404)
    assert client.get("/api/v1/me", headers=keys.header("viewer")).status_code == 200


def test_create_rejects_bad_input(client, keys):
    headers = keys.header("admin")
    cases = [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x", "role": "owner"}, "role"),
        ({"name": "x", "key": "cvk_chosen"}, "key"),
        ({"name": "x", "keyPrefix": "cvk_"}, "keyPrefix"),
        ({"name": "x", "extra": 1}, "extra"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/api-keys", json=body, headers=headers)
        assert field in assert_error(response, 422)["errors"], body
    assert len(client.get("/api/v1/api-keys", headers=headers).json) == 4
