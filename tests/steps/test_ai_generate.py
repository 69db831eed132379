"""``ai_generate`` against local OpenAI- and Anthropic-format servers, and offline."""

from __future__ import annotations

import dataclasses
import json

import anthropic
import openai
import pytest

from app import metrics
from steps import ai_generate
from steps.errors import StepError, TransientError
from tests.peers import AnthropicPeer, OpenAIPeer, WebhookReceiver
from tests.steps.fakes import FakeLLM, FakeStepServices, fake_ctx
from tests.steps.support import add_credential, fast_services, make_ctx, runtime_for
from tests.steps.walking import walk_step


@pytest.fixture
def openai_peer():
    with OpenAIPeer(api_key="sk-test-0123456789abcdef") as peer:
        yield peer


@pytest.fixture
def anthropic_peer():
    with AnthropicPeer(api_key="sk-ant-test-key") as peer:
        yield peer


@pytest.fixture
def workspace(keys):
    return keys.workspace.id


@pytest.fixture
def runtime(app, settings):
    return runtime_for(app, settings)


@pytest.fixture
def services(runtime, workspace, session, settings, openai_peer, anthropic_peer):
    add_credential(
        session,
        settings,
        workspace,
        "oa",
        "openai",
        {"apiKey": openai_peer.api_key},
        {"baseUrl": openai_peer.base_url},
    )
    add_credential(
        session,
        settings,
        workspace,
        "claude",
        "anthropic",
        {"apiKey": anthropic_peer.api_key},
        {"baseUrl": anthropic_peer.base_url},
    )
    return fast_services(runtime, workspace)


@pytest.fixture
def sleeps(services):
    """Record the gateway's sleeps instead of sleeping."""
    recorded: list[float] = []
    services.llm.sleep = recorded.append
    return recorded


def run(config, ctx):
    return ai_generate.run(ai_generate.Config().load(config), ctx)


OPENAI = {"provider": "openai", "model": "gpt-test", "credential": "oa", "outputField": "seo.title"}
CLAUDE = {
    "provider": "anthropic",
    "model": "claude-test",
    "credential": "claude",
    "outputField": "out",
}


def test_the_openai_peer_speaks_the_official_wire_format(openai_peer):
    client = openai.OpenAI(
        base_url=openai_peer.base_url, api_key=openai_peer.api_key, max_retries=0
    )
    reply = client.chat.completions.create(
        model="gpt-test", messages=[{"role": "user", "content": "hello there"}]
    )
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.usage.completion_tokens == 3
    assert [m.id for m in client.models.list()] == ["gpt-test"]
    openai_peer.misbehave.set("429", times=1, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.response.headers["retry-after"] == "7"
    openai_peer.misbehave.set("500", times=1)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "x"}]
        )


def test_the_anthropic_peer_speaks_the_official_wire_format(anthropic_peer):
    client = anthropic.Anthropic(
        base_url=anthropic_peer.base_url, api_key=anthropic_peer.api_key, max_retries=0
    )
    reply = client.messages.create(
        model="claude-test", max_tokens=50, messages=[{"role": "user", "content": "hi you"}]
    )
    assert reply.content[0].text == "echo: hi you"
    assert reply.usage.output_tokens == 3
    anthropic_peer.misbehave.set("429", times=1)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    anthropic_peer.misbehave.set("500", times=1)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.create(
            model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_openai_text_goes_to_the_output_field_with_usage(services, openai_peer):
    ctx = make_ctx({"title": "Red hat"}, services=services)
    config = {
        **OPENAI,
        "prompt": "Title for {{ entity.data.title }}",
        "system": "Be brief.",
        "temperature": 0.2,
        "maxTokens": 50,
    }
    result = run(config, ctx)
    assert ctx.entity.data["seo"] == {"title": "echo: Title for Red hat"}
    assert result.output == {
        "text": "echo: Title for Red hat",
        "model": "gpt-test",
        "usage": {"inputTokens": 6, "outputTokens": 5},
    }
    assert result.usage == {"inputTokens": 6, "outputTokens": 5}
    sent = openai_peer.requests[-1]
    assert sent["headers"]["authorization"] == f"Bearer {openai_peer.api_key}"
    body = json.loads(sent["body"])
    assert body == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Title for Red hat"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
    }
    assert openai_peer.api_key in services.secrets()


def test_anthropic_messages(services, anthropic_peer):
    ctx = make_ctx({"title": "Hat"}, services=services)
    result = run({**CLAUDE, "prompt": "Describe {{ entity.data.title }}", "system": "Short."}, ctx)
    assert ctx.entity.data["out"] == "echo: Describe Hat"
    assert result.usage == {"inputTokens": 3, "outputTokens": 3}
    sent = anthropic_peer.requests[-1]
    assert sent["headers"]["x-api-key"] == anthropic_peer.api_key
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = json.loads(sent["body"])
    assert body["system"] == "Short." and body["max_tokens"] == 1024
    assert body["messages"] == [{"role": "user", "content": "Describe Hat"}]


@pytest.mark.parametrize("config", [OPENAI, CLAUDE])
def test_429_holds_the_bucket_and_the_steps_retry_waits_for_it(
    services, sleeps, openai_peer, anthropic_peer, config
):
    peer = openai_peer if config is OPENAI else anthropic_peer
    peer.misbehave.set("429", times=1, retry_after="2")
    with pytest.raises(TransientError, match="answered 429") as caught:
        run({**config, "prompt": "hi"}, make_ctx(services=services))
    assert caught.value.retry_after == 2 and peer.statuses == {429: 1}  # no hidden retry
    # The step's retry: the pipeline waits at least Retry-After, and the held bucket makes
    # the call wait out the rest of the hold (on the limiter, so other workers wait too).
    pipeline_sleeps: list[float] = []
    progress = walk_step(
        "ai_generate", {**config, "prompt": "hi"}, services, max_attempts=2, sleeps=pipeline_sleeps
    )
    assert progress.status == "completed" and progress.records[0]["attempts"] == 1
    assert peer.statuses == {429: 1, 200: 1}
    # the shared hold, not a guess (waited in quarter-second turns, so a cancel is seen)
    assert sleeps and 0 < sum(sleeps) <= 2.0


@pytest.mark.parametrize("config", [OPENAI, CLAUDE])
def test_5xx_is_retried_by_the_steps_retry_policy(services, openai_peer, anthropic_peer, config):
    peer = openai_peer if config is OPENAI else anthropic_peer
    peer.misbehave.set("500", times=2)
    progress = walk_step("ai_generate", {**config, "prompt": "hi"}, services, max_attempts=3)
    assert (
        progress.status == "completed"
        and progress.entity.data["seo" if config is OPENAI else "out"]
    )
    assert peer.statuses == {500: 2, 200: 1} and progress.records[0]["attempts"] == 3


@pytest.mark.parametrize(("max_attempts", "sent"), [(None, 1), (1, 1), (3, 3)])
def test_max_attempts_bounds_the_requests_a_failing_provider_gets(
    services, sleeps, openai_peer, max_attempts, sent
):
    openai_peer.misbehave.set("500")
    progress = walk_step(
        "ai_generate", {**OPENAI, "prompt": "hi"}, services, max_attempts=max_attempts
    )
    assert progress.status == "failed"
    assert progress.error == (
        "step_1: openai answered 500: The server had an error processing your request"
    )
    assert openai_peer.statuses == {500: sent} and progress.records[0]["attempts"] == sent


def test_429s_without_retry_after_are_bounded_too(services, sleeps, anthropic_peer):
    anthropic_peer.misbehave.set("429", retry_after=None)
    progress = walk_step("ai_generate", {**CLAUDE, "prompt": "hi"}, services, max_attempts=3)
    assert progress.status == "failed" and "anthropic answered 429: Rate limit" in progress.error
    assert anthropic_peer.statuses == {429: 3}


def test_timeouts_are_retryable(services, openai_peer):
    openai_peer.misbehave.set("slow", times=1, delay=3)
    with pytest.raises(TransientError, match="took longer than 1s"):
        run(
            {**OPENAI, "prompt": "hi", "timeoutSeconds": 1},
            make_ctx(services=services),
        )


def test_a_refused_key_fails_at_once(services, openai_peer, session, settings, workspace):
    add_credential(
        session,
        settings,
        workspace,
        "wrong",
        "openai",
        {"apiKey": "sk-wrong-0000000000"},
        {"baseUrl": openai_peer.base_url},
    )
    with pytest.raises(StepError) as caught:
        run({**OPENAI, "credential": "wrong", "prompt": "hi"}, make_ctx(services=services))
    assert not caught.value.retryable
    assert caught.value.message == "openai answered 401: Incorrect API key provided."
    assert openai_peer.statuses == {401: 1}


SCHEMA = {"type": "object", "properties": {"tags": {"type": "array"}}, "required": ["tags"]}


def test_json_is_parsed_and_validated(services, openai_peer):
    openai_peer.reply = lambda body: '```json\n{"tags": ["a", "b"]}\n```'
    ctx = make_ctx(services=services)
    result = run({**OPENAI, "prompt": "tags", "format": "json", "jsonSchema": SCHEMA}, ctx)
    assert ctx.entity.data["seo"]["title"] == {"tags": ["a", "b"]}
    assert result.output["json"] == {"tags": ["a", "b"]} and "text" not in result.output
    system = json.loads(openai_peer.requests[-1]["body"])["messages"][0]["content"]
    assert "JSON" in system and '"required": ["tags"]' in system


def test_json_gets_one_repair_attempt(services, openai_peer):
    replies = iter(['{"tags": "not a list"}', '{"tags": ["fixed"]}'])
    openai_peer.reply = lambda body: next(replies)
    ctx = make_ctx(services=services)
    result = run({**OPENAI, "prompt": "tags", "format": "json", "jsonSchema": SCHEMA}, ctx)
    assert result.output["json"] == {"tags": ["fixed"]}
    repair = json.loads(openai_peer.requests[-1]["body"])["messages"]
    assert repair[-2] == {"role": "assistant", "content": '{"tags": "not a list"}'}
    assert "/tags: 'not a list' is not of type 'array'" in repair[-1]["content"]
    # Both calls count towards usage.
    assert result.usage["outputTokens"] == 4 + 2


def test_json_that_stays_invalid_fails_with_the_reason(services, openai_peer):
    openai_peer.reply = lambda body: "Sure! Here are some tags."
    with pytest.raises(StepError) as caught:
        run({**OPENAI, "prompt": "tags", "format": "json"}, make_ctx(services=services))
    assert not caught.value.retryable
    assert "the reply is not JSON" in caught.value.message
    assert "after one repair attempt" in caught.value.message
    assert openai_peer.completions == 2


def test_template_provider_is_offline_and_deterministic():
    ctx = make_ctx({"title": "Hat"})
    result = run({"prompt": "About {{ entity.data.title }}", "outputField": "about"}, ctx)
    assert ctx.entity.data["about"] == "About Hat"
    assert result.output == {
        "text": "About Hat",
        "model": "template",
        "usage": {"inputTokens": 2, "outputTokens": 2},
    }
    as_json = run(
        {
            "prompt": '{"t": "{{ entity.data.title }}"}',
            "outputField": "j",
            "format": "json",
            "jsonSchema": {"type": "object"},
        },
        ctx,
    )
    assert as_json.output["json"] == {"t": "Hat"}
    with pytest.raises(StepError, match="not JSON"):
        run({"prompt": "plain", "outputField": "j", "format": "json"}, ctx)


def test_credential_problems_are_step_errors(services):
    with pytest.raises(StepError, match="No credential named 'nope'"):
        run({**OPENAI, "credential": "nope", "prompt": "x"}, make_ctx(services=services))
    with pytest.raises(StepError, match="is of type 'anthropic', not 'openai'"):
        run({**OPENAI, "credential": "claude", "prompt": "x"}, make_ctx(services=services))
    with pytest.raises(StepError, match="needs a credential"):
        run({**CLAUDE, "credential": None, "prompt": "x"}, make_ctx(services=services))


def test_without_a_secret_key_credentials_cannot_be_used(app, settings, workspace, services):
    runtime = runtime_for(app, dataclasses.replace(settings, secret_keys=()))
    ctx = make_ctx(services=fast_services(runtime, workspace))
    with pytest.raises(StepError, match="CONVEYOR_SECRET_KEY is not set"):
        run({**OPENAI, "prompt": "x"}, ctx)


def test_private_addresses_are_refused_without_the_allow_list(app, settings, workspace, services):
    runtime = runtime_for(app, settings, allow=())
    with pytest.raises(StepError, match="refusing to connect to 127.0.0.1") as caught:
        run({**OPENAI, "prompt": "x"}, make_ctx(services=fast_services(runtime, workspace)))
    assert not caught.value.retryable


def test_keyless_openai_compatible_server_by_base_url(services, openai_peer):
    openai_peer.api_key = ""  # the peer then expects "Bearer " (no key): a local server
    with pytest.raises(StepError, match="401"):
        run(
            {
                "provider": "openai",
                "model": "m",
                "baseUrl": openai_peer.base_url,
                "prompt": "x",
                "outputField": "o",
            },
            make_ctx(services=services),
        )


def test_provider_requests_are_counted_for_metrics(services, sleeps, openai_peer, settings):
    store = metrics.store_for(settings)
    before = store.read(metrics.PROVIDER_CALLS)
    openai_peer.misbehave.set("429", times=1, retry_after="1")
    walk_step("ai_generate", {**OPENAI, "prompt": "hi"}, services, max_attempts=2)
    openai_peer.misbehave.set("500", times=1)
    with pytest.raises(TransientError):
        run({**OPENAI, "prompt": "hi"}, make_ctx(services=services))
    after = store.read(metrics.PROVIDER_CALLS)
    added = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert added == {"openai|rate_limited": 1, "openai|ok": 1, "openai|unavailable": 1}


@pytest.mark.parametrize("config", [OPENAI, CLAUDE])
def test_a_step_base_url_cannot_take_a_credentials_key_elsewhere(
    services, openai_peer, anthropic_peer, config
):
    own = openai_peer if config is OPENAI else anthropic_peer
    with OpenAIPeer(api_key=own.api_key) as elsewhere:
        with pytest.raises(StepError, match="is not where credential") as caught:
            run(
                {**config, "baseUrl": elsewhere.base_url, "prompt": "x"},
                make_ctx(services=services),
            )
        assert not caught.value.retryable
    assert elsewhere.requests == [] and own.requests == []
    # The same origin is where the key belongs: a baseUrl there is used.
    run({**config, "baseUrl": own.url + "/v1/", "prompt": "x"}, make_ctx(services=services))
    assert len(own.requests) == 1


def test_a_credential_without_a_base_url_goes_only_to_the_vendor(
    services, openai_peer, session, settings, workspace
):
    add_credential(session, settings, workspace, "vendor", "openai", {"apiKey": "sk-vendor-key-1"})
    with pytest.raises(StepError, match=r"\(https://api.openai.com\)"):
        run(
            {**OPENAI, "credential": "vendor", "baseUrl": openai_peer.base_url, "prompt": "x"},
            make_ctx(services=services),
        )
    assert openai_peer.requests == []


def test_a_key_does_not_follow_a_redirect_to_another_host(
    services, openai_peer, session, settings, workspace
):
    with WebhookReceiver() as redirector:
        redirector.redirect_to = openai_peer.base_url + "/chat/completions"
        add_credential(
            session,
            settings,
            workspace,
            "moved",
            "anthropic",
            {"apiKey": "sk-ant-moved-key"},
            {"baseUrl": redirector.url},
        )
        with pytest.raises(StepError, match="refusing to follow a redirect"):
            run({**CLAUDE, "credential": "moved", "prompt": "x"}, make_ctx(services=services))
    assert len(redirector.requests) == 1 and openai_peer.requests == []


# --- with the in-memory services: prompt rendering and output, no app, database or peer --


def test_the_rendered_prompt_goes_to_the_llm_and_its_text_to_the_output_field():
    fake = FakeStepServices(
        llm=FakeLLM(replies=[{"text": "A red hat", "model": "m", "usage": {"inputTokens": 3}}])
    )
    ctx = fake_ctx({"title": "Red hat"}, services=fake)
    config = {
        **OPENAI,
        "prompt": "Title for {{ entity.data.title }}",
        "system": "Be {{ 'brief' }}.",
    }
    result = run(config, ctx)
    assert fake.llm.calls == [
        {
            "config": fake.llm.calls[0]["config"],
            "prompt": "Title for Red hat",
            "system": "Be brief.",
        }
    ]
    assert ctx.entity.data["seo"] == {"title": "A red hat"}
    assert result.usage == {"inputTokens": 3}


def test_a_json_reply_is_stored_as_json():
    fake = FakeStepServices(llm=FakeLLM(replies=[{"json": {"tags": ["a"]}, "model": "m"}]))
    ctx = fake_ctx(services=fake)
    run({**OPENAI, "prompt": "tags", "format": "json", "outputField": "tags"}, ctx)
    assert ctx.entity.data["tags"] == {"tags": ["a"]}


def test_without_services_only_the_template_provider_runs():
    ctx = fake_ctx({"title": "Hat"})
    ctx.services = None
    with pytest.raises(StepError, match="not available"):
        run({**OPENAI, "prompt": "x"}, ctx)
    run({"provider": "template", "prompt": "{{ entity.data.title }}!", "outputField": "t"}, ctx)
    assert ctx.entity.data["t"] == "Hat!"


def test_an_exhausted_window_in_the_reply_headers_holds_the_next_call(
    services, sleeps, openai_peer
):
    """x-ratelimit-remaining-requests: 0 on a 200: the bucket is held until the reset, for
    every worker (the limiter's block), so the next call waits instead of meeting a 429."""
    answer = openai_peer.handle

    def handle(method, path, headers, body):
        status, reply_headers, payload = answer(method, path, headers, body)
        if path.endswith("/chat/completions"):
            reply_headers = {
                **reply_headers,
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "2s",
            }
        return status, reply_headers, payload

    openai_peer.handle = handle
    run({**OPENAI, "prompt": "hi"}, make_ctx(services=services))
    assert sleeps == []
    run({**OPENAI, "prompt": "again"}, make_ctx(services=services))
    assert 1.0 < sum(sleeps) <= 2.0  # waited out the provider's reset, on the shared limiter
    assert openai_peer.statuses == {200: 2}
