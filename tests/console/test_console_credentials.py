"""Testing a credential from the console reaches the real destination, once."""

from __future__ import annotations

import dataclasses

import pytest

from tests.console.support import sign_in
from tests.peers import WebhookReceiver, new_webhook_secret


@pytest.fixture
def settings(settings):
    """The local receiver may be called."""
    return dataclasses.replace(settings, outbound_allow_hosts=("127.0.0.1",))


def test_testing_a_webhook_credential_signs_and_sends_one_event(client, keys):
    secret = new_webhook_secret()
    csrf = sign_in(client, keys.editor)
    created = client.post(
        "/console/credentials",
        data={
            "csrf_token": csrf,
            "name": "shop",
            "type": "webhook",
            "data": f'{{"secret": "{secret}"}}',
        },
    )
    assert created.status_code == 302
    page = client.get("/console/credentials")
    assert 'name="url" type="url"' in page.text and secret not in page.text
    cred_id = client.get("/api/v1/credentials", headers=keys.header()).json[0]["id"]
    with WebhookReceiver(secret) as receiver:
        response = client.post(
            f"/console/credentials/{cred_id}/test",
            data={"csrf_token": csrf, "url": receiver.url + "/hook"},
        )
        assert response.status_code == 302
        assert len(receiver.deliveries) == 1 and receiver.rejected == 0
        assert receiver.deliveries[0]["path"] == "/hook"
    notice = client.get("/console/credentials").text
    assert "Credential &#39;shop&#39; works: the receiver accepted a signed test event" in notice
    entries = client.get("/api/v1/audit?action=credential.tested", headers=keys.header()).json
    assert len(entries) == 1 and entries[0]["resourceId"] == cred_id
