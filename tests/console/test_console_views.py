"""Console views through the Flask test client: sign-in and its cookie, CSRF, roles, runs,
failure reasons, cancel/retry, entities, credentials, API keys and the offline API docs."""

from __future__ import annotations

import re

import fakeredis
from sqlmodel import select

from app.console.sessions import ConsoleSession, MemorySessionStore, RedisSessionStore
from app.models import Run
from tests.conftest import make_entities, make_entity_type
from tests.console.support import (
    FAILURE,
    PRICE_LIMIT,
    csrf_of,
    make_failing_workflow,
    sign_in,
    wait_for_run,
)


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
        "awaiting_approval": 0,
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
    from tests.conftest import make_workflow
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
