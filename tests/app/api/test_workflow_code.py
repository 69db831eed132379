"""``GET /workflows/{id}/code`` and ``/project.zip``: runnable, self-contained, no secrets.

The CI test builds a fresh venv with only ``conveyor-client`` installed (from
``clients/python``) and lets the exported script drive a run to completion against a
live server.
"""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from tests.clients.live import live_url as live_url  # a fixture
from tests.conftest import PRODUCT_SCHEMA, Keys, make_entities, make_entity_type, make_workflow

ROOT = Path(__file__).resolve().parents[3]
SECRET = "sk-very-secret-value-123"


def _workflow(client: FlaskClient, keys: Keys) -> dict[str, Any]:
    """A workflow whose ai_generate step names a credential holding a secret."""
    response = client.post(
        "/api/v1/credentials",
        json={
            "name": "llm",
            "type": "openai",
            "data": {"apiKey": SECRET},
            "settings": {"baseUrl": "http://127.0.0.1:9/v1"},
        },
        headers=keys.header("editor"),
    )
    assert response.status_code == 201, response.json
    entity_type = make_entity_type(client, keys, name="Product ✓")
    return make_workflow(
        client,
        keys,
        entity_type["id"],
        [
            {
                "id": "tag",
                "type": "transform",
                "config": {"set": {"tag": "{{ entity.data.title }}"}},
            },
            {
                "id": "describe",
                "type": "ai_generate",
                "config": {
                    "provider": "openai",
                    "credential": "llm",
                    "model": "gpt-test",
                    "prompt": "Describe {{ entity.data.title }}",
                    "outputField": "description",
                },
            },
        ],
        name='Describe "products" 2026',
    )


def test_code_is_a_python_script_embedding_the_export(client: FlaskClient, keys: Keys) -> None:
    workflow = _workflow(client, keys)
    response = client.get(f"/api/v1/workflows/{workflow['id']}/code", headers=keys.header("viewer"))
    assert response.status_code == 200
    assert response.mimetype == "text/x-python"
    assert 'filename="describe_products_2026.py"' in response.headers["Content-Disposition"]
    script = response.get_data(as_text=True)
    tree = ast.parse(script)  # valid Python
    assigned = [
        node
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and node.target.id == "WORKFLOW"  # type: ignore[attr-defined]
    ]
    embedded = ast.literal_eval(assigned[0].value)  # type: ignore[arg-type]
    exported = client.get(
        f"/api/v1/workflows/{workflow['id']}/export", headers=keys.header("viewer")
    ).json
    assert embedded == exported
    assert embedded["steps"][1]["config"]["credential"] == "llm"
    for secret in (SECRET, keys.viewer, keys.admin, keys.editor, workflow["id"]):
        assert secret not in script


def test_project_zip_holds_script_yaml_pyproject_readme(client: FlaskClient, keys: Keys) -> None:
    workflow = _workflow(client, keys)
    response = client.get(
        f"/api/v1/workflows/{workflow['id']}/project.zip", headers=keys.header("viewer")
    )
    assert response.status_code == 200
    assert response.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = sorted(archive.namelist())
    assert names == [
        "describe-products-2026/README.md",
        "describe-products-2026/describe_products_2026.py",
        "describe-products-2026/pyproject.toml",
        "describe-products-2026/workflow.yaml",
    ]
    exported = client.get(
        f"/api/v1/workflows/{workflow['id']}/export", headers=keys.header("viewer")
    ).json
    assert yaml.safe_load(archive.read("describe-products-2026/workflow.yaml")) == exported
    import tomllib

    pyproject = tomllib.loads(archive.read("describe-products-2026/pyproject.toml").decode())
    assert pyproject["project"]["dependencies"] == ["conveyor-client>=0.1"]
    assert pyproject["tool"]["setuptools"]["py-modules"] == ["describe_products_2026"]
    for name in names:
        text = archive.read(name).decode()
        for secret in (SECRET, keys.viewer, keys.admin):
            assert secret not in text


def test_code_of_another_workspace_is_404(client: FlaskClient, keys: Keys) -> None:
    workflow = _workflow(client, keys)
    other = {"Authorization": f"Bearer {keys.other_admin}"}
    for suffix in ("code", "project.zip"):
        response = client.get(f"/api/v1/workflows/{workflow['id']}/{suffix}", headers=other)
        assert response.status_code == 404
        assert response.json["code"] == 404


@pytest.fixture(scope="session")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only conveyor-client (and so httpx) installed."""
    path = tmp_path_factory.mktemp("client-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(path)
    python = path / "bin" / "python"
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT / "clients" / "python")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return python


def test_exported_script_runs_a_workflow_in_a_fresh_venv(
    client: FlaskClient, keys: Keys, live_url: str, client_venv: Path, tmp_path: Path
) -> None:
    entity_type = make_entity_type(client, keys, name="Article", schema=PRODUCT_SCHEMA)
    done_ids = [e["id"] for e in make_entities(client, keys, entity_type["id"], 25)]
    workflow = make_workflow(
        client,
        keys,
        entity_type["id"],
        [{"id": "mark", "type": "transform", "config": {"status": "done"}}],
        name="Mark articles",
    )
    script = client.get(f"/api/v1/workflows/{workflow['id']}/code", headers=keys.header("viewer"))
    path = tmp_path / "mark_articles.py"
    path.write_text(script.get_data(as_text=True))
    # The workflow is changed on the server: the script puts its own definition back.
    changed = client.patch(
        f"/api/v1/workflows/{workflow['id']}",
        json={"steps": [{"id": "mark", "type": "transform", "config": {"status": "other"}}]},
        headers=keys.header("editor"),
    )
    assert changed.status_code == 200
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CONVEYOR_URL": live_url,
        "CONVEYOR_API_KEY": keys.editor,
    }
    result = subprocess.run(
        [str(client_venv), str(path), "--status", "draft"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "updated workflow" in result.stderr
    assert "25 completed, 0 failed, 0 cancelled of 25" in result.stdout
    again = subprocess.run(
        [str(client_venv), str(path), "--no-watch", "--entity-id", done_ids[0]],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is up to date" in again.stderr
    assert again.stdout.strip().startswith("run_")
    stored = client.get(f"/api/v1/workflows/{workflow['id']}", headers=keys.header("viewer")).json
    assert stored["steps"][0]["config"]["status"] == "done"
    done = client.get(
        f"/api/v1/entities?entityTypeId={entity_type['id']}&status=done&limit=100",
        headers=keys.header("viewer"),
    ).json
    assert len(done) == 25
    # In a workspace without it, the script creates the workflow (and its entity type).
    other = subprocess.run(
        [str(client_venv), str(path), "--all"],
        capture_output=True,
        text=True,
        env={**env, "CONVEYOR_API_KEY": keys.other_admin},
        cwd=tmp_path,
        timeout=300,
    )
    assert other.returncode == 0, other.stdout + other.stderr
    assert "created workflow" in other.stderr
    assert "of 0" in other.stdout
    assert sys.executable != str(client_venv)
