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
