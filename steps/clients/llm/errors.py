"""The errors an LLM provider call ends in: rejected for good, or worth a retry."""

from __future__ import annotations

from steps.errors import StepError, TransientError


class ProviderRejected(StepError):
    """The provider refused the request (4xx other than 408/429): retrying will not help."""


class ProviderRateLimited(TransientError):
    """The provider answered 429."""


class ProviderUnavailable(TransientError):
    """The provider answered 5xx (or 408/529), timed out, or could not be reached."""
