"""Exceptions: one base class carrying Conveyor's error shape, one subclass per status."""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """An error answer from Conveyor: ``{code, status, message, errors}``.

    ``code`` is the HTTP status (``None`` when no answer arrived at all), ``errors`` maps
    paths such as ``steps[0].config.model`` to messages, ``headers`` are the response's.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        status: str = "",
        errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.errors: dict[str, Any] = errors or {}
        self.headers: dict[str, str] = headers or {}

    def __str__(self) -> str:
        head = f"{self.code} {self.status}: " if self.code else ""
        return f"{head}{self.message}"


class ConveyorConnectionError(ConveyorError):
    """No answer: the connection failed or dropped, and retrying did not help."""


class BadRequest(ConveyorError):
    """400: the request is malformed."""


class Unauthorized(ConveyorError):
    """401: missing or unknown API key."""


class Forbidden(ConveyorError):
    """403: the key's role is too low."""


class NotFound(ConveyorError):
    """404: no such resource in this workspace."""


class Conflict(ConveyorError):
    """409: the resource's state forbids this (archived workflow, stale version…)."""


class PreconditionFailed(ConveyorError):
    """412: ``If-Match`` named a version that is no longer current."""


class PayloadTooLarge(ConveyorError):
    """413: the body is too large."""


class ValidationError(ConveyorError):
    """422: the body or query is not valid; ``errors`` names the failing paths."""


class RateLimited(ConveyorError):
    """429: too many requests, still so after the client's retries."""


class ServiceUnavailable(ConveyorError):
    """503: a backing service is down, still so after the client's retries."""


class ServerError(ConveyorError):
    """Any other 5xx: a bug on the server."""


_BY_CODE: dict[int, type[ConveyorError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_for(code: int, body: Any, headers: dict[str, str]) -> ConveyorError:
    """The exception for an error response (any body: Conveyor's shape, or not)."""
    cls = _BY_CODE.get(code) or (ServerError if code >= 500 else ConveyorError)
    if isinstance(body, dict) and "message" in body:
        return cls(
            str(body["message"]),
            code=code,
            status=str(body.get("status", "")),
            errors=body.get("errors") if isinstance(body.get("errors"), dict) else {},
            headers=headers,
        )
    text = body if isinstance(body, str) and body else f"HTTP {code}"
    return cls(text[:500], code=code, status="", headers=headers)
