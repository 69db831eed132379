"""``/api/v1/credentials``: write-only secrets, roles, isolation, and real tests per type."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from sqlmodel import select

from app.crypto import SecretBox
from app.models import Credential
from app.services.credentials import rotate_credentials
from tests.app.api import assert_error
from tests.peers import AnthropicPeer, OpenAIPeer, SmtpPeer, WebhookReceiver, new_webhook_secret

URL = "/api/v1/credentials"


@pytest.fixture
def settings(settings):
    """Credential tests call peers on 127.0.0.1."""
    return dataclasses.replace(settings, outbound_allow_hosts=("127.0.0.1",))


def create(client, keys, body, role="editor"):
    return client.post(URL, json=body, headers=keys.header(role))


OPENAI = {
    "name": "openai-main",
    "type": "openai",
    "data": {"apiKey": "sk-live-abcdefghijklmnop"},
    "settings": {"requestsPerMinute": 500, "tokensPerMinute": 200000},
}


def test_create_read_update_delete(client, keys, session):
    response = create(client, keys, OPENAI)
    assert response.status_code == 201, response.json
    created = response.json
    assert set(created) == {"id", "name", "type", "settings", "createdAt", "updatedAt"}
    assert created["settings"] == {"requestsPerMinute": 500, "tokensPerMinute": 200000}
    assert "sk-live" not in json.dumps(created)
    row = session.get(Credential, created["id"])
    assert b"sk-live" not in row.secret  # encrypted at rest
    session.rollback()  # SQLite: do not hold the write lock the API needs

    listed = client.get(URL, headers=keys.header("viewer"))
    assert listed.status_code == 200 and [c["id"] for c in listed.json] == [created["id"]]
    one = client.get(f"{URL}/{created['id']}", headers=keys.header("viewer")).json
    assert one == created

    renamed = client.put(
        f"{URL}/{created['id']}", json={"name": "openai-2"}, headers=keys.header("editor")
    )
    assert renamed.status_code == 200 and renamed.json["name"] == "openai-2"
    assert renamed.json["settings"] == created["settings"]  # omitted: kept
    replaced = client.put(
        f"{URL}/{created['id']}",
        json={
            "name": "openai-2",
            "type": "openai",
            "data": {"apiKey": "sk-new-key-000000"},
            "settings": {"baseUrl": "http://llm.internal:8000/v1"},
        },
        headers=keys.header("editor"),
    )
    assert replaced.status_code == 200, replaced.json
    assert replaced.json["settings"] == {"baseUrl": "http://llm.internal:8000/v1"}
    session.expire_all()
    box = SecretBox(("test-secret-key-0123456789abcdef",))
    from app.services.credentials import open_credential

    assert open_credential(session.get(Credential, created["id"]), box).data == {
        "api_key": "sk-new-key-000000"
    }
    session.rollback()

    assert client.delete(f"{URL}/{created['id']}", headers=keys.header("editor")).status_code == 204
    assert client.get(f"{URL}/{created['id']}", headers=keys.header()).status_code == 404


def test_roles(client, keys):
    assert create(client, keys, OPENAI, role="executor").status_code == 403
    created = create(client, keys, OPENAI).json
    assert client.get(URL, headers=keys.header("viewer")).status_code == 200
    for method in ("put", "delete"):
        response = getattr(client, method)(
            f"{URL}/{created['id']}", json={"name": "x"}, headers=keys.header("executor")
        )
        assert response.status_code == 403
    test = client.post(f"{URL}/{created['id']}/test", json={}, headers=keys.header("viewer"))
    assert test.status_code == 403
    assert client.get(URL).status_code == 401


def test_other_workspaces_see_nothing(client, keys):
    created = create(client, keys, OPENAI).json
    other = {"Authorization": f"Bearer {keys.other_admin}"}
    assert client.get(URL, headers=other).json == []
    assert client.get(f"{URL}/{created['id']}", headers=other).status_code == 404
    assert client.delete(f"{URL}/{created['id']}", headers=other).status_code == 404
    assert client.post(f"{URL}/{created['id']}/test", json={}, headers=other).status_code == 404


def test_validation_per_type(client, keys):
    cases = [
        ({**OPENAI, "data": {}}, "data.apiKey"),
        ({**OPENAI, "data": {"apiKey": "k", "extra": 1}}, "data.extra"),
        ({**OPENAI, "settings": {"requestsPerMinute": 0}}, "settings.requestsPerMinute"),
        ({**OPENAI, "type": "carrier-pigeon"}, "type"),
        (
            {"name": "m", "type": "smtp", "data": {}, "settings": {"tls": "starttls"}},
            "settings.host",
        ),
        (
            {"name": "m", "type": "smtp", "data": {}, "settings": {"host": "h", "tls": "tls1.0"}},
            "settings.tls",
        ),
        ({"name": "s", "type": "slack", "data": {"url": "not a url"}}, "data.url"),
        ({"name": "w", "type": "webhook", "data": {"secret": "short"}}, "data.secret"),
        ({"name": "w", "type": "webhook", "data": {}}, "data"),
        ({"name": "", "type": "slack", "data": {"url": "https://hooks.slack.com/x"}}, "name"),
    ]
    for body, path in cases:
        response = create(client, keys, body)
        assert response.status_code == 422, (body, response.json)
        assert path in response.json["errors"], (path, response.json)
        assert "abcdefghijklmnop" not in json.dumps(response.json)


def test_names_are_unique_per_workspace(client, keys):
    assert create(client, keys, OPENAI).status_code == 201
    assert create(client, keys, OPENAI).status_code == 409
    other = client.post(URL, json=OPENAI, headers={"Authorization": f"Bearer {keys.other_admin}"})
    assert other.status_code == 201


def test_type_cannot_change(client, keys):
    created = create(client, keys, OPENAI).json
    response = client.put(
        f"{URL}/{created['id']}",
        json={"name": "x", "type": "anthropic"},
        headers=keys.header("editor"),
    )
    assert response.status_code == 422 and "type" in response.json["errors"]


@pytest.fixture
def no_key_app(settings):
    from app import create_app

    application = create_app(
        {
            "CONVEYOR": dataclasses.replace(settings, secret_keys=()),
            "AUTO_MIGRATE": False,
            "TESTING": True,
        }
    )
    yield application
    from app import queue

    queue.shutdown_app(application)


def test_without_a_secret_key_creating_is_refused_with_the_reason(no_key_app, keys):
    client = no_key_app.test_client()
    response = create(client, keys, OPENAI)
    assert response.status_code == 503
    assert "CONVEYOR_SECRET_KEY is not set" in response.json["message"]
    assert client.get(URL, headers=keys.header("viewer")).status_code == 200


def test_openai_test_makes_a_real_call(client, keys):
    with OpenAIPeer(api_key="sk-live-abcdefghijklmnop") as peer:
        good = create(client, keys, {**OPENAI, "settings": {"baseUrl": peer.base_url}}).json
        bad = create(
            client,
            keys,
            {
                **OPENAI,
                "name": "bad",
                "data": {"apiKey": "sk-wrong-000000000"},
                "settings": {"baseUrl": peer.base_url},
            },
        ).json
        ok = client.post(f"{URL}/{good['id']}/test", json={}, headers=keys.header("editor"))
        refused = client.post(f"{URL}/{bad['id']}/test", json={}, headers=keys.header("editor"))
    assert ok.status_code == 200 and ok.json["ok"] is True, ok.json
    assert "1 models listed" in ok.json["message"]
    assert refused.json["ok"] is False
    assert refused.json["message"] == "openai answered 401: Incorrect API key provided."
    assert [r["path"] for r in peer.requests] == ["/v1/models", "/v1/models"]


def test_anthropic_test_makes_a_real_call(client, keys):
    with AnthropicPeer(api_key="sk-ant-abcdefghijklmnop") as peer:
        created = create(
            client,
            keys,
            {
                "name": "claude",
                "type": "anthropic",
                "data": {"apiKey": "sk-ant-abcdefghijklmnop"},
                "settings": {"baseUrl": peer.base_url},
            },
        ).json
        result = client.post(
            f"{URL}/{created['id']}/test", json={}, headers=keys.header("editor")
        ).json
    assert result["ok"] is True, result
    assert peer.requests[0]["headers"]["x-api-key"] == "sk-ant-abcdefghijklmnop"


def test_smtp_test_logs_in(client, keys):
    with SmtpPeer(tls="starttls") as peer:
        body = {
            "name": "mail",
            "type": "smtp",
            "data": {"password": "s3cret-pw"},
            "settings": {
                "host": "127.0.0.1",
                "port": peer.port,
                "username": "mailer",
                "verifyTls": False,
            },
        }
        good = create(client, keys, body).json
        bad = create(client, keys, {**body, "name": "bad", "data": {"password": "nope-nope"}}).json
        ok = client.post(f"{URL}/{good['id']}/test", json={}, headers=keys.header("editor")).json
        refused = client.post(
            f"{URL}/{bad['id']}/test", json={}, headers=keys.header("editor")
        ).json
    assert ok["ok"] is True and "logged in as mailer" in ok["message"], ok
    assert refused["ok"] is False and "refused the login" in refused["message"]
    assert "nope-nope" not in refused["message"]
    assert peer.logins == ["mailer"]


def test_slack_and_webhook_tests_post(client, keys):
    secret = new_webhook_secret()
    with WebhookReceiver() as slack, WebhookReceiver(secret) as receiver:
        hook = create(
            client,
            keys,
            {"name": "slack", "type": "slack", "data": {"url": slack.url + "/services/T/B/tok"}},
        ).json
        signed = create(
            client, keys, {"name": "wh", "type": "webhook", "data": {"secret": secret}}
        ).json
        slack_result = client.post(
            f"{URL}/{hook['id']}/test", json={}, headers=keys.header("editor")
        )
        no_url = client.post(f"{URL}/{signed['id']}/test", json={}, headers=keys.header("editor"))
        posted = client.post(
            f"{URL}/{signed['id']}/test", json={"url": receiver.url}, headers=keys.header("editor")
        )
    assert slack_result.json["ok"] is True, slack_result.json
    assert "Conveyor: test message" in slack.deliveries[0]["json"]["text"]
    assert no_url.json["ok"] is False and "no url" in no_url.json["message"]
    assert posted.json["ok"] is True and "signed" in posted.json["message"]
    assert receiver.rejected == 0 and receiver.deliveries[0]["json"]["type"] == "conveyor.test"


def test_tests_refuse_private_addresses_without_the_allow_list(app, client, keys):
    app.config["CONVEYOR"] = dataclasses.replace(app.config["CONVEYOR"], outbound_allow_hosts=())
    created = create(
        client,
        keys,
        {"name": "s", "type": "slack", "data": {"url": "http://169.254.169.254/latest"}},
    ).json
    result = client.post(f"{URL}/{created['id']}/test", json={}, headers=keys.header("editor")).json
    assert result["ok"] is False and "not a public address" in result["message"]


def test_keys_rotate(client, keys, session, settings):
    create(client, keys, OPENAI)
    rotated = SecretBox(("a-brand-new-key-0123456789", *settings.secret_keys))
    assert rotate_credentials(session=session, box=rotated) == 1
    assert rotate_credentials(session=session, box=rotated) == 0
    row = session.exec(select(Credential)).one()
    from app.services.credentials import open_credential

    new_only = SecretBox(("a-brand-new-key-0123456789",))
    assert open_credential(row, new_only).data["api_key"] == "sk-live-abcdefghijklmnop"


def test_documented_in_openapi(client):
    spec = client.get("/api/v1/openapi.json").json
    assert {
        "/api/v1/credentials",
        "/api/v1/credentials/{credential_id}",
        "/api/v1/credentials/{credential_id}/test",
    } <= set(spec["paths"])


def test_a_test_url_never_takes_a_webhook_credentials_secret_elsewhere(client, keys):
    secret = new_webhook_secret()
    with WebhookReceiver(secret) as own, WebhookReceiver() as elsewhere:
        pinned = create(
            client,
            keys,
            {
                "name": "pinned",
                "type": "webhook",
                "data": {"secret": secret, "url": own.url + "/in", "headers": {"X-Token": "t-123"}},
            },
        ).json
        loose = create(
            client,
            keys,
            {"name": "loose", "type": "webhook", "data": {"headers": {"X-Token": "t-456"}}},
        ).json
        refused = client.post(
            f"{URL}/{pinned['id']}/test",
            json={"url": elsewhere.url + "/steal"},
            headers=keys.header("editor"),
        )
        headers_only = client.post(
            f"{URL}/{loose['id']}/test", json={"url": elsewhere.url}, headers=keys.header("editor")
        )
        stored = client.post(f"{URL}/{pinned['id']}/test", json={}, headers=keys.header("editor"))
        same_origin = client.post(
            f"{URL}/{pinned['id']}/test",
            json={"url": own.url + "/other"},
            headers=keys.header("editor"),
        )
    assert "may only be sent to" in assert_error(refused, 422)["errors"]["url"][0]
    assert "headers but no url" in assert_error(headers_only, 422)["message"]
    assert elsewhere.requests == []
    assert stored.json["ok"] is True and same_origin.json["ok"] is True
    assert [r["path"] for r in own.requests] == ["/in", "/other"] and own.rejected == 0


def test_only_webhook_credentials_take_a_test_url(client, keys):
    with WebhookReceiver() as elsewhere:
        slack = create(
            client, keys, {"name": "s", "type": "slack", "data": {"url": elsewhere.url + "/x"}}
        ).json
        response = client.post(
            f"{URL}/{slack['id']}/test", json={"url": elsewhere.url}, headers=keys.header("editor")
        )
    assert "url" in assert_error(response, 422)["errors"]
    assert elsewhere.requests == []


def test_a_slack_test_logs_no_webhook_url(client, keys, caplog):
    token = "XyzSlackSecretToken0123"
    with WebhookReceiver() as slack:
        created = create(
            client,
            keys,
            {
                "name": "slack",
                "type": "slack",
                "data": {"url": f"{slack.url}/services/T0/B0/{token}"},
            },
        ).json
        caplog.set_level(logging.DEBUG)
        result = client.post(f"{URL}/{created['id']}/test", json={}, headers=keys.header("editor"))
    assert result.json["ok"] is True, result.json
    assert slack.deliveries  # the message really went out (and httpx logged the request)
    assert any(r.name == "httpx" for r in caplog.records)
    assert token not in caplog.text and "/services/T0/B0" not in caplog.text
