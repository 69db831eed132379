"""``notify``: webhook, Slack and email (SMTP with STARTTLS, implicit TLS or none)."""

from __future__ import annotations

import pytest

from steps import notify
from steps.errors import StepError, TransientError
from tests.peers import SmtpPeer, WebhookReceiver, new_webhook_secret
from tests.steps.fakes import FakeStepServices, fake_ctx
from tests.steps.support import add_credential, fast_services, make_ctx, runtime_for
from tests.steps.walking import walk_step


@pytest.fixture
def workspace(keys):
    return keys.workspace.id


@pytest.fixture
def services(app, settings, workspace):
    return fast_services(runtime_for(app, settings), workspace)


def run(config, ctx):
    return notify.run(notify.Config().load(config), ctx)


def test_webhook_channel_signed_by_its_credential(services, session, settings, workspace):
    secret = new_webhook_secret()
    with WebhookReceiver(secret) as receiver:
        add_credential(
            session,
            settings,
            workspace,
            "ops",
            "webhook",
            {"secret": secret, "url": receiver.url + "/ops", "headers": {"X-Token": "tok-123456"}},
        )
        ctx = make_ctx({"title": "Hat"}, services=services)
        config = {
            "channel": "webhook",
            "credential": "ops",
            "message": "{{ entity.data.title }} ok",
            "subject": "Done",
        }
        assert run(config, ctx).output == {"channel": "webhook", "delivered": True}
    assert receiver.rejected == 0 and receiver.ids == {"run_1:ent_1:step_1": 1}
    delivery = receiver.deliveries[0]
    assert delivery["path"] == "/ops" and delivery["headers"]["x-token"] == "tok-123456"
    assert delivery["json"]["type"] == "conveyor.notification"
    assert delivery["json"]["data"]["message"] == "Hat ok"
    assert delivery["json"]["data"]["subject"] == "Done"
    assert delivery["json"]["data"]["entity"] == {"id": "ent_1", "status": "draft"}
    assert "tok-123456" in services.secrets()


def test_slack_by_url_and_by_credential(services, session, settings, workspace):
    with WebhookReceiver() as slack:
        run(
            {
                "channel": "slack",
                "url": slack.url + "/services/T/B/x",
                "message": "Hello",
                "subject": "Run",
            },
            make_ctx(services=services),
        )
        add_credential(
            session,
            settings,
            workspace,
            "slack",
            "slack",
            {"url": slack.url + "/services/T/B/secret"},
        )
        run(
            {"channel": "slack", "credential": "slack", "message": "Plain"},
            make_ctx(services=services),
        )
    assert [d["json"] for d in slack.deliveries] == [{"text": "*Run*\nHello"}, {"text": "Plain"}]
    assert slack.deliveries[1]["path"] == "/services/T/B/secret"


def test_slack_refusals(services):
    with WebhookReceiver(status=404) as slack:
        with pytest.raises(StepError, match="answered 404") as caught:
            run({"channel": "slack", "url": slack.url, "message": "x"}, make_ctx(services=services))
        assert not caught.value.retryable
    with WebhookReceiver() as slack:
        slack.fail_first = 1  # a 500 may have posted: not retried (at most once)
        with pytest.raises(StepError, match="answered 500") as caught:
            run({"channel": "slack", "url": slack.url, "message": "x"}, make_ctx(services=services))
        assert not caught.value.retryable and len(slack.requests) == 1


@pytest.mark.parametrize(("max_attempts", "sent"), [(None, 1), (1, 1), (3, 3)])
def test_max_attempts_bounds_the_webhook_requests(services, max_attempts, sent):
    with WebhookReceiver(fail_first=100) as receiver:
        config = {"channel": "webhook", "url": receiver.url, "message": "hi"}
        progress = walk_step("notify", config, services, max_attempts=max_attempts)
    assert progress.status == "failed" and "answered 500" in progress.error
    assert len(receiver.requests) == sent and progress.records[0]["attempts"] == sent
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {"run_1:ent_1:step_1"}


def test_a_webhook_that_recovers_is_delivered_on_the_steps_retry(services):
    with WebhookReceiver(fail_first=1) as receiver:
        config = {"channel": "webhook", "url": receiver.url, "message": "hi"}
        progress = walk_step("notify", config, services, max_attempts=3)
    assert progress.status == "completed" and progress.records[0]["attempts"] == 2
    assert receiver.statuses == {500: 1, 200: 1} and receiver.unique_ids == 1


def test_slack_is_sent_once_whatever_max_attempts_says(services):
    with WebhookReceiver(fail_first=100) as slack:
        config = {"channel": "slack", "url": slack.url, "message": "hi"}
        progress = walk_step("notify", config, services, max_attempts=3)
    assert progress.status == "failed" and len(slack.requests) == 1  # a 500 may have posted


def test_a_webhook_credential_with_a_url_is_sent_only_there(services, session, settings, workspace):
    secret = new_webhook_secret()
    with WebhookReceiver(secret) as own, WebhookReceiver() as elsewhere:
        add_credential(
            session,
            settings,
            workspace,
            "ops",
            "webhook",
            {"secret": secret, "url": own.url + "/ops", "headers": {"X-Token": "tok-ops-123"}},
        )
        config = {"channel": "webhook", "credential": "ops", "url": elsewhere.url, "message": "x"}
        with pytest.raises(StepError, match="may only be sent to") as caught:
            run(config, make_ctx(services=services))
        assert not caught.value.retryable
        run({**config, "url": own.url + "/ops"}, make_ctx(services=services))
    assert elsewhere.requests == []
    assert len(own.deliveries) == 1 and own.rejected == 0


def smtp_credential(session, settings, workspace, peer, name="mail", **overrides):
    options = {
        "host": "127.0.0.1",
        "port": peer.port,
        "tls": peer.tls,
        "username": "mailer",
        "fromAddress": "conveyor@example.com",
        "verifyTls": False,
        **overrides,
    }
    password = overrides.pop("password", "s3cret-pw")
    add_credential(
        session,
        settings,
        workspace,
        name,
        "smtp",
        {"password": password},
        {k: v for k, v in options.items() if k != "password"},
    )


@pytest.mark.parametrize("tls", ["starttls", "ssl", "none"])
def test_email_over_each_tls_mode(services, session, settings, workspace, tls):
    with SmtpPeer(tls=tls) as peer:
        smtp_credential(session, settings, workspace, peer)
        ctx = make_ctx({"title": "Hat"}, services=services)
        config = {
            "channel": "email",
            "credential": "mail",
            "to": ["a@example.com", "b@example.com"],
            "subject": "New: {{ entity.data.title }}",
            "message": "{{ entity.data.title }} is live.",
        }
        assert run(config, ctx).output == {"channel": "email", "delivered": True}
    assert peer.logins == ["mailer"]
    [message] = peer.messages
    assert message["from"] == "conveyor@example.com"
    assert message["to"] == ["a@example.com", "b@example.com"]
    assert (message["subject"], message["body"]) == ("New: Hat", "Hat is live.")
    assert message["message_id"].endswith("@conveyor.invalid>")
    assert "s3cret-pw" in services.secrets()


def test_email_login_refused(services, session, settings, workspace):
    with SmtpPeer(tls="starttls") as peer:
        smtp_credential(session, settings, workspace, peer, password="wrong")
        with pytest.raises(StepError, match="refused the login") as caught:
            run(
                {"channel": "email", "credential": "mail", "to": ["a@example.com"], "message": "x"},
                make_ctx(services=services),
            )
    assert not caught.value.retryable and peer.messages == []


def test_email_checks_certificates_by_default(services, session, settings, workspace):
    with SmtpPeer(tls="ssl") as peer:
        smtp_credential(session, settings, workspace, peer, verifyTls=True)
        with pytest.raises(StepError, match="TLS failed"):
            run(
                {"channel": "email", "credential": "mail", "to": ["a@example.com"], "message": "x"},
                make_ctx(services=services),
            )


def test_email_server_down_is_transient(services, session, settings, workspace):
    with SmtpPeer(tls="none") as peer:
        port = peer.port
    add_credential(
        session,
        settings,
        workspace,
        "gone",
        "smtp",
        {},
        {"host": "127.0.0.1", "port": port, "tls": "none", "fromAddress": "a@example.com"},
    )
    with pytest.raises(TransientError, match="could not connect"):
        run(
            {"channel": "email", "credential": "gone", "to": ["a@example.com"], "message": "x"},
            make_ctx(services=services),
        )


def test_email_to_a_private_host_needs_the_allow_list(app, settings, session, workspace):
    strict = fast_services(runtime_for(app, settings, allow=()), workspace)
    with SmtpPeer(tls="none") as peer:
        smtp_credential(session, settings, workspace, peer)
        with pytest.raises(StepError, match="refusing to connect"):
            run(
                {"channel": "email", "credential": "mail", "to": ["a@example.com"], "message": "x"},
                make_ctx(services=strict),
            )
    assert peer.messages == []


def test_config_is_checked():
    import marshmallow as ma

    with pytest.raises(ma.ValidationError):
        notify.Config().load({"channel": "email", "message": "x", "to": ["a@example.com"]})
    with pytest.raises(ma.ValidationError):
        notify.Config().load({"channel": "slack", "message": "x"})


# --- with the in-memory services: rendering and hand-off, no app, database or peer ------


def test_the_rendered_message_and_subject_go_to_notify_under_the_steps_key():
    fake = FakeStepServices()
    ctx = fake_ctx({"title": "Hat"}, services=fake, step_id="tell")
    config = {
        "channel": "slack",
        "url": "https://hooks.example.com/x",
        "message": "{{ entity.data.title }} is out",
        "subject": "Run {{ run.id }}",
    }
    result = run(config, ctx)
    assert result.output == {"channel": "slack", "delivered": True}
    [sent] = fake.notifications
    assert (sent["message"], sent["subject"], sent["key"]) == (
        "Hat is out",
        "Run run_1",
        "run_1:ent_1:tell",
    )
    assert sent["config"]["channel"] == "slack"


def test_a_dry_run_says_nothing_was_delivered():
    fake = FakeStepServices()
    ctx = fake_ctx(services=fake)
    ctx.dry_run = True
    result = run({"channel": "slack", "url": "https://hooks.example.com/x", "message": "m"}, ctx)
    assert result.output == {"channel": "slack", "delivered": False}
    assert len(fake.notifications) == 1  # the dry-run services record instead of sending


def test_without_services_a_notification_is_refused():
    ctx = fake_ctx()
    ctx.services = None
    with pytest.raises(StepError, match="not available"):
        run({"channel": "slack", "url": "https://hooks.example.com/x", "message": "m"}, ctx)
