"""Tests of the HTTP API, one module per resource."""

from __future__ import annotations

from typing import Any

from werkzeug.test import TestResponse


def assert_error(response: TestResponse, code: int) -> dict[str, Any]:
    """Assert ``response`` is an error of ``code`` in the one SPEC shape; return its body."""
    assert response.status_code == code, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"code", "status", "message", "errors"}, body
    assert body["code"] == code
    assert isinstance(body["status"], str) and body["status"]
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["errors"], dict)
    return body
