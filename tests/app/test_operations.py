"""``/healthz``, ``/readyz`` and the OpenAPI document with its interactive docs."""

import re

import pytest

from app import create_app, queue
from app.config import Settings


@pytest.fixture
def make_app(settings):
    """Build extra apps on other settings; their worker threads stop afterwards."""
    made = []

    def build(**changes):
        values = {**settings.__dict__, **changes}
        app = create_app({"CONVEYOR": Settings(**values), "AUTO_MIGRATE": False, "TESTING": True})
        made.append(app)
        return app

    yield build
    for app in made:
        queue.shutdown_app(app)


def _assert_unavailable(response):
    assert response.status_code == 503
    body = response.json
    assert set(body) == {"code", "status", "message", "errors"}
    assert body["code"] == 503 and body["status"] == "Service Unavailable"
    assert int(response.headers["Retry-After"]) > 0
    return body


def test_healthz_needs_no_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_readyz_when_the_database_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json == {"status": "ready"}


def test_readyz_is_503_when_the_database_is_unreachable(make_app, tmp_path):
    missing = tmp_path / "no-such-dir" / "conveyor.db"
    client = make_app(database_url=f"sqlite:///{missing}").test_client()
    body = _assert_unavailable(client.get("/readyz"))
    assert any(s.startswith("database") for s in body["errors"]["services"])
    assert client.get("/healthz").status_code == 200
    # The API says the same rather than failing with a 500.
    _assert_unavailable(client.get("/api/v1/me", headers={"Authorization": "Bearer cvk_x"}))


def test_readyz_is_503_when_postgresql_is_down(make_app):
    client = make_app(
        database_url="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2"
    ).test_client()
    body = _assert_unavailable(client.get("/readyz"))
    assert any(s.startswith("database") for s in body["errors"]["services"])


def test_readyz_is_503_when_redis_is_unreachable(make_app):
    client = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    body = _assert_unavailable(client.get("/readyz"))
    assert any(s.startswith("redis") for s in body["errors"]["services"])


def test_openapi_document_lists_every_path(app, client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Conveyor"
    documented = document["paths"]
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint.startswith("api-docs"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods or ())
    assert routes, "no API routes registered"
    for path, methods in routes.items():
        assert path in documented, f"{path} is missing from the OpenAPI document"
        for method in methods - {"head", "options"}:
            assert method in documented[path], f"{method.upper()} {path} is not documented"
    for path in (
        "/api/v1/me",
        "/api/v1/api-keys",
        "/api/v1/api-keys/{key_id}",
        "/api/v1/entity-types",
        "/api/v1/entity-types/{type_id}",
        "/api/v1/entities",
        "/api/v1/entities/bulk",
        "/api/v1/entities/{entity_id}",
        "/api/v1/entities/{entity_id}/runs",
        "/api/v1/workflows",
        "/api/v1/workflows/{workflow_id}",
        "/api/v1/step-types",
        "/api/v1/step-types/{step_type}",
    ):
        assert path in documented


def test_openapi_operations_have_summaries_and_bearer_auth(client):
    document = client.get("/api/v1/openapi.json").json
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
            assert operation["responses"], f"{method.upper()} {path} has no responses"


def test_openapi_uses_camel_case_fields(client):
    schemas = client.get("/api/v1/openapi.json").json["components"]["schemas"]
    entity = schemas["Entity"]["properties"]
    assert {"entityTypeId", "publishedAt", "publishedVersion", "createdAt"} <= set(entity)
    assert not any("_" in name for name in entity)


def test_interactive_docs_answer(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "swagger" in response.get_data(as_text=True).lower()
    assert "openapi.json" in response.get_data(as_text=True)
