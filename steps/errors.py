"""Errors raised by steps; the pipeline turns them into failed or retried steps."""

from __future__ import annotations


class StepError(Exception):
    """A step could not finish. ``retryable`` errors are retried per ``settings.retry``."""

    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class TemplateError(StepError):
    """A template or expression failed to render (syntax, sandbox, size or time)."""


class TransientError(StepError):
    """A failure worth retrying: a timeout, a 5xx, a rate limit."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Interrupted(StepError):
    """The run was cancelled (or the entity handed to another worker) while the step waited
    for its turn: nothing was sent, and the entity stops here."""


class UnknownStepType(KeyError):
    """No step type is registered under that name."""


class OutboundRefused(StepError):
    """An outbound call was refused: the address is private, loopback, link-local or
    metadata, and its host is not in ``CONVEYOR_OUTBOUND_ALLOW_HOSTS``."""


class OutboundUnreachable(TransientError):
    """An outbound call could not connect, so nothing was sent."""


class OutboundTimeout(TransientError):
    """An outbound call timed out or broke after the request may have been sent."""


class ResponseTooLarge(StepError):
    """A peer's response body was over the size cap."""
