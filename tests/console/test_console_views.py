"""Console views through the Flask test client: sign-in and its cookie, CSRF, roles, runs,
failure reasons, cancel/retry, entities, credentials, API keys and the offline API docs."""

from __future__ import annotations

import re

import fakeredis
import pytest
from sqlmodel import select

from app.console.sessions import ConsoleSession, MemorySessionStore, RedisSessionStore
from app.models import Run
from tests.app.api.test_approvals import setup_gate
from tests.conftest import RecordingQueue, make_entities, make_entity_type, make_workflow
from tests.console.support import (
    FAILURE,
    PRICE_LIMIT,
    csrf_of,
    make_failing_workflow,
    sign_in,
    wait_for_run,
)


@pytest.fixture
def queue(app):
    """Runs stay where the test puts them: queued tasks are recorded, not run."""
    original = app.extensions["conveyor.queue"]
    recording = RecordingQueue()
    app.extensions["conveyor.queue"] = recording
    yield recording
    app.extensions["conveyor.queue"] = original


def _cookie_header(response) -> str:
    headers = [
        h for h in response.headers.getlist("Set-Cookie") if h.startswith("conveyor_console=")
    ]
    assert headers, "no session cookie was set"
    return headers[-1]


def _runs(session) -> list[Run]:
    """Every run, read in a transaction that ends at once (SQLite: no lock held after)."""
    session.expire_all()
    rows = list(session.exec(select(Run)))
    session.rollback()
    return rows


# --- sign in -----------------------------------------------------------------------------


def test_console_pages_need_sign_in(client):
    response = client.get("/console/workflows")
    assert response.status_code == 302
    assert response.location.startswith("/console/sign-in?next=/console/workflows")
    assert client.get("/").location.endswith("/console/workflows")


def test_sign_in_holds_the_key_server_side_behind_a_strict_httponly_cookie(client, keys):
    page = client.get("/console/sign-in")
    assert page.status_code == 200
    assert '<label for="api_key">API key</label>' in page.text
    response = client.post(
        "/console/sign-in", data={"api_key": keys.admin, "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 302 and response.location == "/console/workflows"
    cookie = _cookie_header(response)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    value = cookie.split(";")[0].split("=", 1)[1]
    assert keys.admin not in value and len(value) >= 40  # a random id, not the key
    # The anonymous pre-sign-in session id is replaced: no session fixation.
    assert value not in _cookie_header(page)
    workflows = client.get("/console/workflows")
    assert workflows.status_code == 200
    assert "Acme admin" in workflows.text and "admin" in workflows.text


def test_cookie_is_secure_over_https(app, keys):
    client = app.test_client()
    page = client.get("/console/sign-in", base_url="https://localhost")
    response = client.post(
        "/console/sign-in",
        data={"api_key": keys.viewer, "csrf_token": csrf_of(page.text)},
        base_url="https://localhost",
    )
    assert "Secure" in _cookie_header(response)

    proxied = app.test_client()
    page = proxied.get("/console/sign-in", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in _cookie_header(page)


def test_unknown_console_pages_are_html_404s(client, keys):
    sign_in(client, keys.viewer)
    response = client.get("/console/no-such-page")
    assert response.status_code == 404 and response.content_type.startswith("text/html")
    assert client.get("/console/runs/run_nope").status_code == 404


def test_a_wrong_key_is_refused(client):
    page = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in", data={"api_key": "cvk_not-a-real-key", "csrf_token": csrf_of(page.text)}
    )
    assert response.status_code == 401
    assert "not valid" in response.text
    assert client.get("/console/workflows").status_code == 302


def test_sign_out_ends_the_session(client, keys):
    csrf = sign_in(client, keys.admin)
    response = client.post("/console/sign-out", data={"csrf_token": csrf})
    assert response.status_code == 302
    assert "conveyor_console=;" in _cookie_header(response)
    assert client.get("/console/workflows").status_code == 302


def test_a_revoked_key_signs_its_browser_out(client, keys):
    sign_in(client, keys.executor)
    me = client.get("/api/v1/me", headers=keys.header("executor")).json
    assert (
        client.delete(f"/api/v1/api-keys/{me['key']['id']}", headers=keys.header()).status_code
        == 204
    )
    assert client.get("/console/workflows").status_code == 302


def test_a_redirect_after_sign_in_stays_in_the_console(client, keys):
    page = client.get("/console/sign-in")
    response = client.post(
        "/console/sign-in",
        data={"api_key": keys.admin, "csrf_token": csrf_of(page.text), "next": "//evil.example/"},
    )
    assert response.location == "/console/workflows"


# --- CSRF and roles ----------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(client, keys, session):
    workflow = make_failing_workflow(client, keys, 5)
    # Sign-in itself needs the token.
    client.get("/console/sign-in")
    assert client.post("/console/sign-in", data={"api_key": keys.admin}).status_code == 403
    csrf = sign_in(client, keys.admin)
    url = f"/console/workflows/{workflow['id']}/run"
    missing = client.post(url, data={"selection": "all"})
    assert missing.status_code == 403
    assert "CSRF" in missing.text and missing.content_type.startswith("text/html")
    wrong = client.post(url, data={"selection": "all", "csrf_token": csrf[:-2] + "xx"})
    assert wrong.status_code == 403
    assert _runs(session) == []
    assert client.post(url, data={"selection": "all", "csrf_token": csrf}).status_code == 302
    assert len(_runs(session)) == 1


def test_a_viewer_sees_no_run_button_and_cannot_run(client, keys, session):
    workflow = make_failing_workflow(client, keys, 5)
    csrf = sign_in(client, keys.viewer)
    page = client.get(f"/console/workflows/{workflow['id']}")
    assert page.status_code == 200
    assert "Check prices" in page.text and "Run workflow" not in page.text
    assert client.get(f"/console/workflows/{workflow['id']}/run").status_code == 403
    refused = client.post(
        f"/console/workflows/{workflow['id']}/run", data={"selection": "all", "csrf_token": csrf}
    )
    assert refused.status_code == 403 and "executor" in refused.text
    assert _runs(session) == []
    assert "API keys" not in page.text  # admin only
    assert client.get("/console/api-keys").status_code == 403


def test_an_executor_sees_the_run_button(client, keys):
    workflow = make_failing_workflow(client, keys, 5)
    sign_in(client, keys.executor)
    assert "Run workflow" in client.get(f"/console/workflows/{workflow['id']}").text


def test_another_workspace_is_invisible(client, keys):
    workflow = make_failing_workflow(client, keys, 3)
    sign_in(client, keys.other_admin)
    assert "Check prices" not in client.get("/console/workflows").text
    assert client.get(f"/console/workflows/{workflow['id']}").status_code == 404


# --- runs --------------------------------------------------------------------------------


def _start(client, csrf, workflow_id, **form):
    return client.post(f"/console/workflows/{workflow_id}/run", data={"csrf_token": csrf, **form})


def test_a_run_from_the_console_shows_grouped_failures_and_filters_items(client, keys):
    count = PRICE_LIMIT + 20
    workflow = make_failing_workflow(client, keys, count)
    csrf = sign_in(client, keys.executor)
    response = _start(client, csrf, workflow["id"], selection="all")
    assert response.status_code == 302
    run_id = response.location.rsplit("/", 1)[1]
    run = wait_for_run(client, keys, workflow["id"], run_id)
    assert run["progress"]["failed"] == 20
    page = client.get(f"/console/runs/{run_id}")
    assert page.status_code == 200
    assert 'role="progressbar"' in page.text
    assert f'aria-valuemax="{count}"' in page.text and f'aria-valuenow="{count}"' in page.text
    assert 'id="run-status" data-status="failed"' in page.text
    reasons = re.findall(
        r'class="reason-count">(\d+)</span> <span class="reason-message">([^<]+)<', page.text
    )
    assert len(reasons) == 1 and reasons[0][0] == "20" and FAILURE in reasons[0][1]
    link = re.search(r'<a href="([^"]+)" class="reason">', page.text).group(1)
    filtered = client.get(link.replace("&amp;", "&"))
    shown = re.findall(r'<tr data-entity="[^"]+" data-status="(\w+)"', filtered.text)
    assert shown == ["failed"] * 20
    assert FAILURE in filtered.text and "Check price" in filtered.text  # step name shown


def test_live_state_is_json_with_an_etag(client, keys):
    workflow = make_failing_workflow(client, keys, 30)
    csrf = sign_in(client, keys.viewer)
    csrf = sign_in(client, keys.executor)
    run_id = _start(client, csrf, workflow["id"], selection="all").location.rsplit("/", 1)[1]
    wait_for_run(client, keys, workflow["id"], run_id)
    live = client.get(f"/console/runs/{run_id}/live")
    assert live.status_code == 200
    assert live.json["progress"] == {
        "total": 30,
        "completed": 30,
        "failed": 0,
        "cancelled": 0,
        "pending": 0,
        "awaitingApproval": 0,
    }
    assert live.json["status"] == "completed" and live.json["terminal"] is True
    again = client.get(
        f"/console/runs/{run_id}/live", headers={"If-None-Match": live.headers["ETag"]}
    )
    assert again.status_code == 304
    fragment = client.get(f"/console/runs/{run_id}/items?status=completed")
    assert fragment.status_code == 200 and fragment.text.count("<tr data-entity=") == 30


def test_selection_by_status_and_by_ids(client, keys, session):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 6)
    from tests.console.support import VALIDATE_STEPS

    workflow = make_workflow(client, keys, entity_type["id"], VALIDATE_STEPS)
    client.patch(
        f"/api/v1/entities/{entities[0]['id']}",
        json={"status": "ready"},
        headers=keys.header("editor"),
    )
    csrf = sign_in(client, keys.executor)
    by_status = _start(client, csrf, workflow["id"], selection="status", status="ready")
    run = wait_for_run(client, keys, workflow["id"], by_status.location.rsplit("/", 1)[1])
    assert run["progress"]["total"] == 1
    ids = f"{entities[1]['id']}, {entities[2]['id']}\n{entities[3]['id']}"
    by_ids = _start(client, csrf, workflow["id"], selection="ids", ids=ids)
    run = wait_for_run(client, keys, workflow["id"], by_ids.location.rsplit("/", 1)[1])
    assert run["progress"]["total"] == 3
    unknown = _start(client, csrf, workflow["id"], selection="ids", ids="ent_nope")
    assert unknown.status_code == 422 and "ent_nope" in unknown.text
    bad_input = _start(client, csrf, workflow["id"], selection="all", input="{not json")
    assert bad_input.status_code == 422 and "not valid JSON" in bad_input.text
    assert len(_runs(session)) == 2


def test_retry_failed_from_the_console_links_the_new_run(client, keys):
    workflow = make_failing_workflow(client, keys, PRICE_LIMIT + 5)
    csrf = sign_in(client, keys.executor)
    run_id = _start(client, csrf, workflow["id"], selection="all").location.rsplit("/", 1)[1]
    wait_for_run(client, keys, workflow["id"], run_id)
    assert "Retry failed" in client.get(f"/console/runs/{run_id}").text
    response = client.post(f"/console/runs/{run_id}/retry", data={"csrf_token": csrf})
    assert response.status_code == 302
    retry_id = response.location.rsplit("/", 1)[1]
    assert retry_id != run_id
    retried = wait_for_run(client, keys, workflow["id"], retry_id)
    assert retried["retryOf"] == run_id and retried["progress"]["total"] == 5
    assert (
        f'href="/console/runs/{retry_id}" class="retry-link"'
        in client.get(f"/console/runs/{run_id}").text
    )
    assert 'id="retry-of"' in client.get(f"/console/runs/{retry_id}").text


def test_cancel_from_the_console(client, keys, session):
    from app.services.runs import start_run
    from tests.conftest import RecordingQueue

    workflow = make_failing_workflow(client, keys, 10)
    from app.models import Workflow

    # A run nobody dispatches stays pending: cancel ends it at once with every item cancelled.
    run = start_run(
        session=session,
        queue=RecordingQueue(),
        workflow=session.get(Workflow, workflow["id"]),
        selector={},
    )
    csrf = sign_in(client, keys.executor)
    assert "Cancel run" in client.get(f"/console/runs/{run.id}").text
    response = client.post(f"/console/runs/{run.id}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 302
    page = client.get(response.location)
    assert 'data-status="cancelled"' in page.text and "Run cancelled" in page.text
    again = client.post(f"/console/runs/{run.id}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 409 and "already cancelled" in again.text


def test_console_writes_leave_the_same_audit_entries_as_the_api(client, keys):
    workflow = make_failing_workflow(client, keys, 3)
    csrf = sign_in(client, keys.executor)
    run_id = _start(client, csrf, workflow["id"], selection="all").location.rsplit("/", 1)[1]
    entries = client.get("/api/v1/audit?action=run.started", headers=keys.header()).json
    assert len(entries) == 1
    entry = entries[0]
    assert entry["resourceId"] == run_id
    assert entry["details"]["via"] == "console"
    assert entry["details"]["workflowId"] == workflow["id"]
    assert entry["actor"]["role"] == "executor"
    # A refused write (no CSRF token) leaves nothing.
    client.post(f"/console/workflows/{workflow['id']}/run", data={"selection": "all"})
    assert len(client.get("/api/v1/audit?action=run.started", headers=keys.header()).json) == 1


def test_a_dry_run_from_the_console_is_marked_and_sampled(client, keys, queue):
    """The console starts a dry run over a sample (what the engine then does with a dry run
    is covered by the engine's tests; here the run stays pending on a recording queue)."""
    entity_type = make_entity_type(client, keys)
    make_entities(client, keys, entity_type["id"], 10)
    steps = [{"id": "tag", "type": "transform", "config": {"set": {"tagged": True}}}]
    workflow = make_workflow(client, keys, entity_type["id"], steps, name="Tagger")
    csrf = sign_in(client, keys.executor)
    page = client.get(f"/console/workflows/{workflow['id']}")
    assert "Dry run" in page.text
    form = client.get(f"/console/workflows/{workflow['id']}/run?mode=dry")
    assert "Start dry run" in form.text
    response = _start(client, csrf, workflow["id"], mode="dry", selection="all", sample="3")
    assert response.status_code == 302
    run_id = response.location.rsplit("/", 1)[1]
    run = client.get(
        f"/api/v1/workflows/{workflow['id']}/runs/{run_id}", headers=keys.header()
    ).json
    assert run["dryRun"] is True and run["progress"]["total"] == 3
    assert ("jobs.dispatch.dispatch_run", (run_id,)) in queue.tasks
    assert "dry run: nothing written or sent" in client.get(f"/console/runs/{run_id}").text
    plain = _start(client, csrf, workflow["id"], selection="all")
    plain_id = plain.location.rsplit("/", 1)[1]
    assert "dry run" not in client.get(f"/console/runs/{plain_id}").text
    bad = _start(client, csrf, workflow["id"], mode="dry", selection="all", sample="zero")
    assert bad.status_code == 422 and "Sample" in bad.text


def test_approvals_page_approves_and_rejects_the_selected(client, keys, session, queue):
    gate = setup_gate(client, keys, session, count=4, instructions="Check the title")
    run_id = gate["run_id"]
    pending = client.get(
        f"/api/v1/approvals?runId={run_id}&status=pending", headers=keys.header()
    ).json
    assert len(pending) == 4
    csrf = sign_in(client, keys.viewer)
    viewer_page = client.get(f"/console/approvals?run={run_id}")
    assert viewer_page.text.count("<tr>") == 5  # header + 4, no checkboxes for a viewer
    assert "Approve selected" not in viewer_page.text
    refused = client.post(
        "/console/approvals/decide",
        data={"csrf_token": csrf, "decision": "approve", "ids": [pending[0]["id"]]},
    )
    assert refused.status_code == 403

    csrf = sign_in(client, keys.executor)
    run_page = client.get(f"/console/runs/{run_id}")
    assert f'href="/console/approvals?run={run_id}" data-count="awaitingApproval">4<' in (
        run_page.text
    )
    page = client.get(f"/console/approvals?run={run_id}")
    assert "Approve selected" in page.text and "Reject selected" in page.text
    assert page.text.count('name="ids"') == 4 and "Check the title" in page.text
    approve = [a["id"] for a in pending[:3]]
    response = client.post(
        "/console/approvals/decide",
        data={
            "csrf_token": csrf,
            "decision": "approve",
            "ids": approve,
            "next": "/console/approvals",
        },
    )
    assert response.status_code == 302 and response.location == "/console/approvals"
    assert "Approved 3." in client.get("/console/approvals").text
    client.post(
        "/console/approvals/decide",
        data={"csrf_token": csrf, "decision": "reject", "ids": [pending[3]["id"]], "comment": "no"},
    )
    statuses = {
        a["id"]: (a["status"], a["comment"])
        for a in client.get(f"/api/v1/approvals?runId={run_id}", headers=keys.header()).json
    }
    assert statuses == {
        **{i: ("approved", None) for i in approve},
        pending[3]["id"]: ("rejected", "no"),
    }
    decided = client.get("/console/approvals?status=rejected").text
    assert pending[3]["entityId"] in decided
    entries = client.get("/api/v1/audit?action=approval.decided", headers=keys.header()).json
    assert len(entries) == 2 and all(e["details"]["via"] == "console" for e in entries)
    again = client.post(
        "/console/approvals/decide",
        data={"csrf_token": csrf, "decision": "reject", "ids": approve[:1]},
    )
    assert again.status_code == 302
    assert "Rejected 0. 1 were already decided." in client.get("/console/workflows").text


def test_revisions_show_a_diff_and_restore(client, keys):
    workflow = make_failing_workflow(client, keys, 1)
    renamed = client.patch(
        f"/api/v1/workflows/{workflow['id']}",
        json={"name": "Check prices v2"},
        headers=keys.header("editor"),
    )
    assert renamed.status_code == 200, renamed.json
    csrf = sign_in(client, keys.viewer)
    page = client.get(f"/console/workflows/{workflow['id']}/revisions")
    assert page.status_code == 200
    assert "v1" in page.text and "v2" in page.text
    assert "~ replace</span> <code>/name</code>" in page.text and "Check prices v2" in page.text
    assert "Restore" not in page.text  # viewer
    refused = client.post(
        f"/console/workflows/{workflow['id']}/revisions/1/restore", data={"csrf_token": csrf}
    )
    assert refused.status_code == 403

    csrf = sign_in(client, keys.editor)
    assert "Restore version 1" in client.get(f"/console/workflows/{workflow['id']}/revisions").text
    response = client.post(
        f"/console/workflows/{workflow['id']}/revisions/1/restore", data={"csrf_token": csrf}
    )
    assert response.status_code == 302
    restored = client.get(f"/api/v1/workflows/{workflow['id']}", headers=keys.header()).json
    assert restored["name"] == "Check prices" and restored["version"] == 3
    assert "Restored version 1 as version 3." in client.get(response.location).text
    first = client.get(f"/console/workflows/{workflow['id']}/revisions?version=1").text
    assert "+ add</span> <code>/steps</code>" in first  # v1 against the empty document


# --- entities, triggers, credentials, keys -----------------------------------------------


def test_entities_browser_filters_and_pages(client, keys):
    entity_type = make_entity_type(client, keys)
    entities = make_entities(client, keys, entity_type["id"], 60)
    client.patch(
        f"/api/v1/entities/{entities[5]['id']}",
        json={"status": "ready"},
        headers=keys.header("editor"),
    )
    sign_in(client, keys.viewer)
    first = client.get(f"/console/entities?type={entity_type['id']}")
    assert first.text.count('<th scope="row">') == 50
    next_link = re.search(r'<a href="([^"]+)" rel="next">', first.text).group(1)
    second = client.get(next_link.replace("&amp;", "&"))
    assert second.text.count('<th scope="row">') == 10
    ready = client.get("/console/entities?status=ready")
    assert ready.text.count('<th scope="row">') == 1 and entities[5]["id"] in ready.text
    assert (
        client.get("/console/entities?updated_since=2999-01-01").text.count('<th scope="row">') == 0
    )
    assert client.get("/console/entities?updated_since=yesterday").status_code == 400
    page = client.get(f"/console/entities/{entities[5]['id']}")
    assert page.status_code == 200 and "Item 5" in page.text


def test_credentials_are_created_and_never_shown_back(client, keys):
    csrf = sign_in(client, keys.editor)
    secret = "sk-this-is-very-secret"
    response = client.post(
        "/console/credentials",
        data={
            "csrf_token": csrf,
            "name": "llm",
            "type": "openai",
            "data": f'{{"apiKey": "{secret}"}}',
            "settings": '{"baseUrl": "http://127.0.0.1:9/v1"}',
        },
    )
    assert response.status_code == 302
    page = client.get("/console/credentials")
    assert "llm" in page.text and "Credential &#39;llm&#39; created." in page.text
    assert secret not in page.text
    duplicate = client.post(
        "/console/credentials",
        data={
            "csrf_token": csrf,
            "name": "llm",
            "type": "openai",
            "data": f'{{"apiKey": "{secret}"}}',
        },
    )
    assert duplicate.status_code == 422 and "already exists" in duplicate.text
    assert secret not in duplicate.text  # not even re-filled into the form
    cred_id = client.get("/api/v1/credentials", headers=keys.header()).json[0]["id"]
    tested = client.post(f"/console/credentials/{cred_id}/test", data={"csrf_token": csrf})
    assert tested.status_code == 302
    assert "failed" in client.get("/console/credentials").text  # nothing listens on port 9
    client.post(f"/console/credentials/{cred_id}/delete", data={"csrf_token": csrf})
    assert client.get("/api/v1/credentials", headers=keys.header()).json == []


def test_a_viewer_cannot_manage_credentials(client, keys):
    csrf = sign_in(client, keys.viewer)
    assert "New credential" not in client.get("/console/credentials").text
    response = client.post(
        "/console/credentials",
        data={"csrf_token": csrf, "name": "x", "type": "slack", "data": "{}"},
    )
    assert response.status_code == 403


def test_admin_creates_a_key_shown_once(client, keys):
    csrf = sign_in(client, keys.admin)
    response = client.post(
        "/console/api-keys", data={"csrf_token": csrf, "name": "ci", "role": "executor"}
    )
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    key = re.search(r'id="new-key" class="mono" readonly value="(cvk_[^"]+)"', response.text).group(
        1
    )
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json["key"]["role"]
        == "executor"
    )
    assert key not in client.get("/console/api-keys").text


def test_triggers_page_shows_the_next_fire_time(client, keys):
    workflow = make_failing_workflow(client, keys, 2)
    created = client.post(
        "/api/v1/triggers",
        json={
            "workflowId": workflow["id"],
            "type": "cron",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Paris",
        },
        headers=keys.header("editor"),
    )
    assert created.status_code == 201, created.json
    sign_in(client, keys.viewer)
    page = client.get("/console/triggers")
    assert "0 9 * * 1-5" in page.text and "Europe/Paris" in page.text
    assert re.search(r"<time datetime=\"\d{4}-\d\d-\d\dT", page.text)
    detail = client.get(f"/console/triggers/{created.json['id']}")
    assert detail.status_code == 200 and "It has not fired yet." in detail.text


# --- API docs offline --------------------------------------------------------------------


def test_swagger_ui_is_served_locally(client):
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200
    assert (
        "cdn" not in docs.text.lower() and "/console/swagger-ui/swagger-ui-bundle.js" in docs.text
    )
    bundle = client.get("/console/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000


# --- session stores ----------------------------------------------------------------------


def test_memory_sessions_expire_and_keep_only_a_digest():
    store = MemorySessionStore(idle_seconds=0)
    store.put("sid", ConsoleSession(csrf_token="t", key_id="key_1"))
    assert "sid" not in store._rows
    assert store.get("sid") is None  # idle for more than 0 s
    store = MemorySessionStore()
    store.put("sid", ConsoleSession(csrf_token="t", key_id="key_1"))
    assert store.get("sid") == ConsoleSession(csrf_token="t", key_id="key_1")
    store.delete("sid")
    assert store.get("sid") is None


def test_redis_sessions_have_a_ttl():
    redis = fakeredis.FakeRedis()
    store = RedisSessionStore(redis, idle_seconds=600)
    store.put("sid", ConsoleSession(csrf_token="t", key_id="key_1", notices=[["ok", "hi"]]))
    names = redis.keys("conveyor:console:session:*")
    assert len(names) == 1 and b"sid" not in names[0]
    assert 0 < redis.ttl(names[0]) <= 600
    assert store.get("sid") == ConsoleSession(
        csrf_token="t", key_id="key_1", notices=[["ok", "hi"]]
    )
    store.delete("sid")
    assert store.get("sid") is None
