"""Conveyor's domain errors; the API turns them into HTTP responses in one place."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base of every error the API reports to a client."""

    code = 400

    def __init__(self, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(ConveyorError):
    code = 404


class Conflict(ConveyorError):
    code = 409


class PreconditionFailed(ConveyorError):
    code = 412


class ValidationFailed(ConveyorError):
    code = 422


class ServiceUnavailable(ConveyorError):
    code = 503


def flatten_errors(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn nested marshmallow errors into ``{"steps[0].config.model": [...]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            if prefix == "" and key in ("json", "query", "headers", "files", "form"):
                flat.update(flatten_errors(value, ""))
                continue
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                path = f"{prefix}[{key}]"
            elif key == "_schema":
                path = prefix or "_schema"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, path))
    elif isinstance(errors, list):
        if all(isinstance(e, str) for e in errors):
            flat.setdefault(prefix or "_schema", []).extend(errors)
        else:
            for item in errors:
                flat.update(flatten_errors(item, prefix))
    else:
        flat.setdefault(prefix or "_schema", []).append(str(errors))
    return flat
