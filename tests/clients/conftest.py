"""Fixtures for the client tests: a live Conveyor over HTTP."""

from tests.clients.live import live_url  # noqa: F401 (a fixture)
