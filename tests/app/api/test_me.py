"""``GET /api/v1/me``: the calling key and its workspace."""

from tests.app.api import assert_error
from tests.conftest import auth


def test_me_returns_the_workspace_and_the_calling_key(client, keys):
    response = client.get("/api/v1/me", headers=keys.header("viewer"))
    assert response.status_code == 200
    body = response.json
    assert body["workspace"]["id"] == keys.workspace.id
    assert body["workspace"]["name"] == "Acme"
    assert isinstance(body["workspace"]["createdAt"], int)
    assert body["key"]["role"] == "viewer"
    assert body["key"]["name"] == "viewer"
    assert keys.viewer.startswith(body["key"]["keyPrefix"])
    assert body["key"]["id"].startswith("key_")
    assert set(body["key"]) == {"id", "name", "role", "keyPrefix"}
    assert keys.viewer not in response.get_data(as_text=True)


def test_me_reports_each_role(client, keys):
    for role in ("viewer", "executor", "editor", "admin"):
        response = client.get("/api/v1/me", headers=keys.header(role))
        assert response.status_code == 200
        assert response.json["key"]["role"] == role


def test_me_of_another_workspace(client, keys):
    response = client.get("/api/v1/me", headers=auth(keys.other_admin))
    assert response.status_code == 200
    assert response.json["workspace"]["id"] == keys.other_workspace.id
    assert response.json["workspace"]["name"] == "Other"


def test_me_without_a_key_is_401(client, keys):
    assert_error(client.get("/api/v1/me"), 401)


def test_me_with_a_bad_key_is_401(client, keys):
    for header in (
        auth("cvk_not-a-real-key"),
        auth("not-even-a-cvk-key"),
        {"Authorization": f"Basic {keys.admin}"},
        {"Authorization": "Bearer"},
        {"Authorization": keys.admin},
    ):
        assert_error(client.get("/api/v1/me", headers=header), 401)


def test_the_bearer_scheme_is_case_insensitive(client, keys):
    response = client.get("/api/v1/me", headers={"Authorization": f"bearer {keys.editor}"})
    assert response.status_code == 200
