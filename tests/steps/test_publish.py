"""``publish``: mark published; deliver to a Standard Webhooks receiver at most once per key."""

from __future__ import annotations

import pytest

from steps import publish
from steps.errors import OutboundRefused, StepError, TransientError
from tests.peers import WebhookReceiver, new_webhook_secret
from tests.steps.fakes import FakeStepServices, fake_ctx
from tests.steps.support import add_credential, fast_services, make_ctx, runtime_for
from tests.steps.walking import walk_step


@pytest.fixture
def secret():
    return new_webhook_secret()


@pytest.fixture
def receiver(secret):
    with WebhookReceiver(secret) as peer:
        yield peer


@pytest.fixture
def workspace(keys):
    return keys.workspace.id


@pytest.fixture
def services(app, settings, session, workspace, secret):
    add_credential(session, settings, workspace, "hook", "webhook", {"secret": secret})
    add_credential(session, settings, workspace, "oa", "openai", {"apiKey": "sk-x"})
    return fast_services(runtime_for(app, settings), workspace)


def run(config, ctx):
    return publish.run(publish.Config().load(config), ctx)


def test_without_a_target_it_only_marks_the_entity():
    ctx = make_ctx({"title": "Hat"}, version=4)
    result = run({}, ctx)
    assert (ctx.entity.status, ctx.entity.published) == ("published", True)
    assert result.output == {"publishedVersion": 5, "delivery": None}


def test_delivery_is_signed_and_keyed(services, receiver):
    ctx = make_ctx({"title": "Hat"}, version=2, services=services)
    target = {"url": receiver.url + "/in", "credential": "hook", "headers": {"X-Team": "web"}}
    result = run({"target": target}, ctx)
    assert result.output == {"publishedVersion": 3, "delivery": {"statusCode": 200}}
    assert receiver.rejected == 0 and receiver.ids == {"run_1:ent_1:step_1": 1}
    delivery = receiver.deliveries[0]
    assert delivery["headers"]["idempotency-key"] == "run_1:ent_1:step_1"
    assert delivery["headers"]["x-team"] == "web"
    assert delivery["headers"]["webhook-signature"].startswith("v1,")
    event = delivery["json"]
    assert event["type"] == "entity.published"
    assert event["data"]["entity"] == {
        "id": "ent_1",
        "data": {"title": "Hat"},
        "status": "published",
        "version": 2,
        "publishedVersion": 3,
    }
    assert event["data"]["run"] == {"id": "run_1", "workflowId": "wf_1"}


def test_a_resumed_step_reuses_its_key_so_the_receiver_dedupes(services, receiver):
    target = {"url": receiver.url, "credential": "hook"}
    for _ in range(3):  # the step re-run after a worker died mid-step
        run({"target": target}, make_ctx(services=services))
    run({"target": target}, make_ctx(services=services, entity_id="ent_2"))
    assert receiver.ids == {"run_1:ent_1:step_1": 3, "run_1:ent_2:step_1": 1}
    assert receiver.unique_ids == 2


def test_a_receiver_error_is_one_transient_failure(services, receiver):
    receiver.fail_first = 1
    with pytest.raises(TransientError, match="answered 500: .*receiver hiccup") as caught:
        run({"target": {"url": receiver.url, "credential": "hook"}}, make_ctx(services=services))
    assert caught.value.retry_after is None
    assert receiver.statuses == {500: 1}  # no retry hidden inside the client


def test_the_steps_retries_resend_with_the_same_key(services, receiver):
    receiver.fail_first = 2
    target = {"url": receiver.url, "credential": "hook"}
    progress = walk_step("publish", {"target": target}, services, max_attempts=3)
    assert progress.status == "completed"
    assert progress.records[0]["output"]["delivery"] == {"statusCode": 200}
    assert progress.records[0]["attempts"] == 3
    assert receiver.statuses == {500: 2, 200: 1}
    assert {r["headers"]["webhook-id"] for r in receiver.requests} == {"run_1:ent_1:step_1"}


@pytest.mark.parametrize(("max_attempts", "sent"), [(None, 1), (1, 1), (3, 3)])
def test_max_attempts_bounds_the_requests_a_failing_receiver_gets(
    services, receiver, max_attempts, sent
):
    receiver.fail_first = 100
    target = {"url": receiver.url, "credential": "hook"}
    progress = walk_step("publish", {"target": target}, services, max_attempts=max_attempts)
    assert progress.status == "failed" and "answered 500" in progress.error
    assert len(receiver.requests) == sent
    assert progress.records[0]["attempts"] == sent


def test_a_429_retry_after_is_what_the_step_waits(services, receiver):
    receiver.status = 429
    receiver.reply_headers = {"Retry-After": "7"}
    sleeps: list[float] = []
    target = {"url": receiver.url, "credential": "hook"}
    progress = walk_step("publish", {"target": target}, services, max_attempts=2, sleeps=sleeps)
    assert progress.status == "failed" and "answered 429" in progress.error
    assert len(receiver.requests) == 2 and len(sleeps) == 1 and sleeps[0] >= 7


def test_a_4xx_fails_at_once(services, receiver):
    receiver.status = 410
    with pytest.raises(StepError, match="answered 410") as caught:
        run({"target": {"url": receiver.url, "credential": "hook"}}, make_ctx(services=services))
    assert not caught.value.retryable
    assert len(receiver.requests) == 1


def test_a_wrong_secret_is_refused_by_the_receiver(
    services, receiver, session, settings, workspace
):
    add_credential(
        session, settings, workspace, "other", "webhook", {"secret": new_webhook_secret()}
    )
    with pytest.raises(StepError, match="answered 401"):
        run({"target": {"url": receiver.url, "credential": "other"}}, make_ctx(services=services))
    assert receiver.rejected == 1


def test_nobody_listening_is_transient(services):
    with pytest.raises(TransientError, match="could not connect"):
        run({"target": {"url": "http://127.0.0.1:9/"}}, make_ctx(services=services))


def test_credential_of_another_type_is_refused(services, receiver):
    with pytest.raises(StepError, match="not 'webhook'"):
        run({"target": {"url": receiver.url, "credential": "oa"}}, make_ctx(services=services))


def test_private_targets_need_the_allow_list(app, settings, workspace, receiver, services):
    strict = fast_services(runtime_for(app, settings, allow=()), workspace)
    for url in (receiver.url, "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data"):
        with pytest.raises(OutboundRefused):
            run({"target": {"url": url}}, make_ctx(services=strict))
    assert receiver.requests == []


def test_redirects_to_private_addresses_are_refused(app, settings, workspace, receiver):
    services = fast_services(runtime_for(app, settings, allow=("127.0.0.1",)), workspace)
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data"
    with pytest.raises(OutboundRefused, match="169.254.169.254"):
        run({"target": {"url": receiver.url}}, make_ctx(services=services))


def test_a_credential_with_a_url_is_sent_only_there(services, session, settings, workspace):
    secret = new_webhook_secret()
    with WebhookReceiver(secret) as own, WebhookReceiver() as elsewhere:
        add_credential(
            session,
            settings,
            workspace,
            "pinned",
            "webhook",
            {"secret": secret, "url": own.url + "/in", "headers": {"X-Token": "tok-pinned-1"}},
        )
        with pytest.raises(StepError, match="may only be sent to") as caught:
            run(
                {"target": {"url": elsewhere.url + "/in", "credential": "pinned"}},
                make_ctx(services=services),
            )
        assert not caught.value.retryable
        run(
            {"target": {"url": own.url + "/other", "credential": "pinned"}},
            make_ctx(services=services),
        )
    assert elsewhere.requests == []
    assert [r["path"] for r in own.requests] == ["/other"]
    assert own.requests[0]["headers"]["x-token"] == "tok-pinned-1" and own.rejected == 0


def test_credential_headers_without_a_url_go_nowhere(services, session, settings, workspace):
    add_credential(
        session,
        settings,
        workspace,
        "loose",
        "webhook",
        {"secret": new_webhook_secret(), "headers": {"X-Token": "tok-loose-1"}},
    )
    with WebhookReceiver() as elsewhere, pytest.raises(StepError, match="headers but no url"):
        run(
            {"target": {"url": elsewhere.url, "credential": "loose"}},
            make_ctx(services=services),
        )
    assert elsewhere.requests == []


def test_a_credentials_headers_do_not_follow_a_redirect(services, session, settings, workspace):
    secret = new_webhook_secret()
    with WebhookReceiver(secret) as own, WebhookReceiver() as elsewhere:
        add_credential(
            session,
            settings,
            workspace,
            "pinned",
            "webhook",
            {"secret": secret, "url": own.url, "headers": {"X-Token": "tok-pinned-2"}},
        )
        own.redirect_to = elsewhere.url + "/caught"
        with pytest.raises(OutboundRefused, match="refusing to follow a redirect"):
            run({"target": {"url": own.url, "credential": "pinned"}}, make_ctx(services=services))
    assert elsewhere.requests == []


# --- with the in-memory services: the step's own logic, no app, database or receiver ----


def test_a_target_is_handed_to_deliver_under_the_steps_key():
    fake = FakeStepServices(status_code=202)
    ctx = fake_ctx({"title": "Hat"}, services=fake, step_id="pub")
    result = run({"target": {"url": "https://example.com/in", "credential": "hook"}}, ctx)
    assert fake.deliveries == [
        {
            "target": {
                "url": "https://example.com/in",
                "credential": "hook",
                "headers": {},
                "timeout_seconds": 10.0,
            },
            "key": "run_1:ent_1:pub",
        }
    ]
    assert result.output == {"publishedVersion": 2, "delivery": {"statusCode": 202}}
    assert ctx.entity.published is True


def test_a_failed_delivery_leaves_the_step_failing_with_that_error():
    fake = FakeStepServices(fail=TransientError("receiver said 503"))
    with pytest.raises(TransientError, match="503"):
        run({"target": {"url": "https://example.com/in"}}, fake_ctx(services=fake))
    assert fake.deliveries == []


def test_a_target_without_services_is_refused():
    ctx = fake_ctx()
    ctx.services = None
    with pytest.raises(StepError, match="not available"):
        run({"target": {"url": "https://example.com/in"}}, ctx)
