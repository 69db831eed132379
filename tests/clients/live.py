"""A live Conveyor (the embedded default: SQLite and worker threads) on a free local port.

Import ``live_url`` into a test module (or a conftest) to use it as a fixture.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server


@pytest.fixture
def live_url(app: Flask) -> Iterator[str]:
    """The app served over real HTTP by werkzeug in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-conveyor", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)
